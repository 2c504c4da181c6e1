"""A task from params alone: `task.answer_pattern` is a regular expression whose first group is the answer.

The last match in a response (and in a reference) is its answer, compared after trimming and lower-casing, e.g.
`answer_pattern: "Answer:\\s*(\\w+)"` for "... Answer: yes".
"""
from __future__ import annotations

import re

from core.errors import ConfigError
from tasks.base import Task


class RegexTask(Task):
    name = "regex"

    def __init__(self, cfg=None):
        super().__init__(cfg)
        pattern = getattr(cfg, "answer_pattern", None)
        if not pattern:
            raise ConfigError("params.yaml: task.answer_pattern: the regex task needs a pattern whose first group "
                              "is the answer, e.g. --set 'task.answer_pattern=Answer:\\s*(\\w+)'")
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"params.yaml: task.answer_pattern: not a valid regex ({exc})") from None
        if self.pattern.groups < 1:
            raise ConfigError("params.yaml: task.answer_pattern: needs one group, e.g. 'Answer:\\s*(\\w+)'")

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        found = [m.group(1) for m in self.pattern.finditer(response) if m.group(1) is not None]
        return found[-1].strip().lower() if found and found[-1].strip() else None
