"""The demo's task: is this review positive or negative? A response's answer is its first line's last word."""
from __future__ import annotations

import re

from tasks.base import Task

LABELS = ("positive", "negative")


def answer_of(text: str) -> str:
    """The checkable answer of a response: the last word of its first non-empty line, lower-cased.

    'positive' and 'The review is positive.' both give 'positive'.
    """
    for line in text.strip().splitlines():
        words = re.findall(r"[\w'-]+", line.lower())
        if words:
            return words[-1]
    return ""


def is_sentence_answer(text: str) -> bool:
    """The answer is one full sentence: a single line of at least three words, capitalised, ending in '.'.

    'The review is positive.' is; 'positive' and 'the review is positive' are not.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return False
    line = lines[0]
    return line[0].isupper() and line.endswith(".") and len(re.findall(r"[\w'-]+", line)) >= 3


class SentimentTask(Task):
    name = "sentiment"

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        answer = answer_of(response)
        return answer if answer in LABELS else None

    def format_ok(self, response: str) -> bool:
        # the demo's preference data asks for one full sentence ("The review is positive.")
        return is_sentence_answer(response)

    def metrics(self, responses, references, prompts) -> dict[str, float]:
        return {**super().metrics(responses, references, prompts),
                "sentence_share": sum(map(is_sentence_answer, responses)) / max(len(responses), 1)}
