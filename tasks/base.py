"""The task interface: a record in, a prompt out; a response in, an answer and a score out."""
from __future__ import annotations

from abc import ABC, abstractmethod

from core.errors import InputError


class TaskMismatch(InputError):
    """The instructions' references are not answers this task can read."""


class Task(ABC):
    """A task over canonical instruction records ({"messages": [..., {"role": "assistant", ...}]}).

    A checkable task (`checkable = True`) has right and wrong answers: `extract` reads the answer from a response
    (None when there is none), `score` is 1.0 when it equals the reference's, and evaluate reports
    `task_accuracy`. A free-form task scores by overlap with the reference instead.
    """
    name = "task"
    checkable = True

    def __init__(self, cfg=None):
        self.cfg = cfg

    # -- records
    def prompt(self, record: dict) -> list[dict]:
        """The chat messages the model answers: every turn before the last assistant answer."""
        return record["messages"][:-1]

    def reference(self, record: dict) -> str:
        return record["messages"][-1]["content"]

    # -- answers
    @abstractmethod
    def extract(self, response: str, prompt: list[dict]) -> str | None:
        """The answer a response gives (compared with the reference's), or None when it gives none."""

    def reference_answer(self, reference: str, prompt: list[dict]) -> str | None:
        """The answer a reference holds (by default read as a response is)."""
        return self.extract(reference, prompt)

    def score(self, response: str, reference: str, prompt: list[dict]) -> float:
        """1.0 for a right answer, else 0.0 (a free-form task: its overlap in [0, 1])."""
        want = self.reference_answer(reference, prompt)
        return float(want is not None and self.extract(response, prompt) == want)

    def reward(self, response: str, reference: str, prompt: list[dict]) -> float:
        """GRPO's verifiable reward for one sampled response."""
        return self.score(response, reference, prompt)

    def gold(self, response: str, reference: str, prompt: list[dict]) -> float:
        """The score models are judged by in evaluate (`gold_score`): a task's known gold rule where it has one
        (the demo's sentiment task: correct, justified, concise), else its verifiable reward."""
        return self.reward(response, reference, prompt)

    def format_ok(self, response: str) -> bool | None:
        """Whether the response has the form the task asks for; None: the task has no format rule."""
        return None

    def metrics(self, responses: list[str], references: list[str], prompts: list[list[dict]]) -> dict[str, float]:
        """The task's figures over held-out answers (checkable: task_accuracy and answer_rate)."""
        n = max(len(references), 1)
        return {"task_accuracy": sum(self.score(r, ref, p) for r, ref, p in zip(responses, references, prompts)) / n,
                "answer_rate": sum(self.extract(r, p) is not None for r, p in zip(responses, prompts)) / n}

    @property
    def primary_metric(self) -> str:
        """The metric promotion compares a candidate with the champion on (higher is better)."""
        return "task_accuracy"

    # -- fit
    def unreadable(self, records: list[dict]) -> list[int]:
        """Indices of records whose reference holds no answer this task can read."""
        return [i for i, r in enumerate(records)
                if self.reference_answer(self.reference(r), self.prompt(r)) is None]

    def fits(self, records: list[dict]) -> bool:
        return bool(records) and 1 - len(self.unreadable(records)) / len(records) >= self.min_fit

    @property
    def min_fit(self) -> float:
        return getattr(self.cfg, "min_fit", 0.5)

    def check_fit(self, records: list[dict], source: str) -> None:
        if not records:
            raise TaskMismatch(f"{source}: no instruction records to evaluate the task '{self.name}' on")
        bad = self.unreadable(records)
        if 1 - len(bad) / len(records) < self.min_fit:
            first = self.reference(records[bad[0]])
            sample = " ".join(first.split())[:120]
            raise TaskMismatch(f"{source}: task '{self.name}' reads no answer from {len(bad)} of {len(records)} "
                               f"references (at least {self.min_fit:.0%} must hold one; record {bad[0]}'s reference: "
                               f"{sample!r})")
