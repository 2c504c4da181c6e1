"""The demo's task: is this review positive or negative?

A response's answer is the one label its verdict names: 'positive', 'The review is positive.' and 'Positive,
because the lid is sturdy.' all answer positive; 'The review is not positive.' (a negated label) and a response
naming both labels answer nothing. The gold rule (`gold`) is what the demo's preference data was ordered by:
correct, then justified by a reason the review itself gives, then said in one short sentence.
"""
from __future__ import annotations

import re

from tasks.base import Task

LABELS = ("positive", "negative")
NEGATIONS = {"not", "no", "never", "isn't", "wasn't", "hardly"}
REASON = re.compile(r"\bbecause\s+([^.!?]+)", re.IGNORECASE)
CONCISE_WORDS = 15  # "not longer than needed": a label and one quoted reason fit in 15 words


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


def answer_of(text: str) -> str | None:
    """The label a response's verdict names (its first line, before any 'because'), or None.

    None when the verdict names no label, both labels, or negates ('not positive', 'positive, I think not').
    """
    verdict = re.split(r"\bbecause\b", _first_line(text), maxsplit=1, flags=re.IGNORECASE)[0]
    words = _words(verdict)
    named = {w for w in words if w in LABELS}
    if len(named) != 1:
        return None
    negated = NEGATIONS & set(words) or any(w.endswith("n't") for w in words)
    return None if negated else named.pop()


def review_text(prompt: list[dict]) -> str:
    """The text the question is about: the last user turn."""
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def reason_of(response: str) -> str | None:
    """The reason a response gives: after "because" to the end of that sentence (lower-cased), or None."""
    match = REASON.search(_first_line(response))
    return " ".join(match.group(1).lower().split()) if match else None


def is_justified(response: str, prompt: list[dict]) -> bool:
    """The reason given is quoted from the review (at least three words of it): grounded, not made up."""
    reason = reason_of(response)
    return reason is not None and len(reason.split()) >= 3 and reason in " ".join(review_text(prompt).lower().split())


def is_concise(response: str) -> bool:
    """One line, one sentence, at most CONCISE_WORDS words."""
    text = response.strip()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    return "\n" not in text and len(sentences) <= 1 and 0 < len(_words(text)) <= CONCISE_WORDS


def gives_reason(response: str) -> bool:
    """The form GRPO's format reward asks for: one sentence giving a reason ('..., because <3+ words>')."""
    reason = reason_of(response)
    return reason is not None and len(reason.split()) >= 3 and is_concise(response)


class SentimentTask(Task):
    name = "sentiment"

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        return answer_of(response)

    def format_ok(self, response: str) -> bool:
        # the verifiable part of the gold rule's form; whether the reason is the review's own is left to gold
        return gives_reason(response)

    def gold(self, response: str, reference: str, prompt: list[dict]) -> float:
        """0 for a wrong or missing label; else 0.5, + 0.3 for a reason quoted from the review, + 0.2 for one
        short sentence. 'positive' = 0.7, 'Positive, because the lid is sturdy.' (quoted) = 1.0, the same with
        padding after it = 0.8, with a reason the review never gives = 0.7."""
        if not self.score(response, reference, prompt):
            return 0.0
        return 0.5 + 0.3 * is_justified(response, prompt) + 0.2 * is_concise(response)

    def metrics(self, responses, references, prompts) -> dict[str, float]:
        n = max(len(responses), 1)
        return {**super().metrics(responses, references, prompts),
                "justified_share": sum(is_justified(r, p) for r, p in zip(responses, prompts)) / n,
                "concise_share": sum(map(is_concise, responses)) / n}
