"""Tasks: what a held-out instruction asks, how its answer is read and scored, and what GRPO is rewarded with.

One file a task (nanochat's `tasks/` is the model). `params.yaml` `task.name` picks one:
  sentiment  the demo: "positive" or "negative" (tasks/sentiment.py)
  numeric    a number, GSM8K's convention: `#### 42` ends the reference, the last number in a response counts
  choice     multiple choice: options "A. ..." in the prompt; a letter or an option's text answers
  free_form  any text: scored by overlap with the reference (chrF, ROUGE-L, BLEU) and exact match
  regex      a params-only task: `task.answer_pattern` reads the answer from responses and references
  <module>   your own: `my_tasks.code:CodeTask` or `path/to/task.py:CodeTask`, a subclass of tasks.base.Task

Every stage that scores answers (evaluate, align's GRPO reward) and the report card goes through the task, and
`check_fit` refuses instructions whose references the task cannot read, naming a task that can.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from pydantic import Field

from core.config import StageConfig
from core.errors import ConfigError
from tasks.base import Task, TaskMismatch

BUILTIN = {"sentiment": "tasks.sentiment:SentimentTask", "numeric": "tasks.numeric:NumericTask",
           "choice": "tasks.choice:ChoiceTask", "free_form": "tasks.free_form:FreeFormTask",
           "regex": "tasks.regex:RegexTask"}


class TaskConfig(StageConfig):
    """params.yaml `task`."""
    name: str = Field("sentiment", description="sentiment | numeric | choice | free_form | regex | module:Class")
    answer_pattern: str | None = Field(None, description="regex task: a pattern whose first group is the answer")
    min_fit: float = Field(0.5, gt=0, le=1, description=(
        "share of references the task must be able to read an answer from; below it the run stops"))


def _import(spec: str):
    module_name, _, attr = spec.partition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigError(f"params.yaml: task.name: {path} not found")
        loaded = importlib.util.spec_from_file_location(f"user_task_{path.stem}", path)
        module = importlib.util.module_from_spec(loaded)
        sys.modules[loaded.name] = module
        loaded.loader.exec_module(module)
    else:
        if str(Path.cwd()) not in sys.path:  # `lifecycle` is a console script: the project root is not on its path
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"params.yaml: task.name: cannot import '{module_name}' ({exc}); built-in tasks are "
                              f"{', '.join(BUILTIN)}") from None
    if attr:
        if not hasattr(module, attr):
            raise ConfigError(f"params.yaml: task.name: {module_name} has no '{attr}'")
        return getattr(module, attr)
    found = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Task) and v is not Task
             and v.__module__ == module.__name__]
    if len(found) != 1:
        raise ConfigError(f"params.yaml: task.name: {module_name} defines {len(found)} Task subclasses; name one as "
                          f"'{module_name}:ClassName'")
    return found[0]


def load_task(cfg: TaskConfig) -> Task:
    cls = _import(BUILTIN.get(cfg.name, cfg.name))
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"params.yaml: task.name: {cfg.name} is not a subclass of tasks.base.Task")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ConfigError(f"params.yaml: task.name: {cfg.name} does not implement {', '.join(missing)} "
                          "(see tasks/base.py)")
    return cls(cfg)


def check_fit(task: Task, records: list[dict], source: str) -> None:
    """Stop when the task cannot read an answer from most references; the message names a task that can."""
    try:
        task.check_fit(records, source)
    except TaskMismatch as exc:
        better = next((name for name in BUILTIN if name not in (task.name, "regex")
                       and load_task(TaskConfig(name=name, min_fit=task.cfg.min_fit)).fits(records)), "free_form")
        raise TaskMismatch(f"{exc}\nThe task does not fit these instructions. Pick one that does "
                           f"(docs/data.md lists the tasks):\n  lifecycle run --set task.name={better}") from None


__all__ = ["Task", "TaskConfig", "TaskMismatch", "load_task", "check_fit", "BUILTIN"]
