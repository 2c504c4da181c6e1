"""Multiple choice: the prompt lists options ("A. ...", "B) ...", "(C) ..."), the answer is one of them.

A reference or a response answers with a letter ("B", "(B)", "The answer is B.") or with an option's text;
both become the option's letter. Letters are only those the prompt offers, so a stray "A" in prose is no answer.
"""
from __future__ import annotations

import re

from tasks.base import Task

OPTION = re.compile(r"^\s*\(?([A-Ja-j])[.):]\s+(.+?)\s*$", re.MULTILINE)


def options(prompt: list[dict]) -> dict[str, str]:
    """{letter: option text} from the last user turn."""
    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return {letter.upper(): text for letter, text in OPTION.findall(user)}


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def choice_answer(text: str, offered: dict[str, str]) -> str | None:
    if not offered:
        return None
    letters = "".join(offered)
    stated = re.findall(rf"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([{letters}])\)?\b", text, re.IGNORECASE)
    if stated:
        return stated[-1].upper()
    alone = re.fullmatch(rf"\W*\(?([{letters}])\)?\W*", text.strip(), re.IGNORECASE)
    if alone:
        return alone.group(1).upper()
    first = re.match(rf"\s*\(?([{letters}])[.):]\s", text)
    if first:
        return first.group(1).upper()
    said = _norm(text)
    hits = [letter for letter, option in offered.items() if _norm(option) and _norm(option) in said]
    if len(hits) == 1:
        return hits[0]
    longest = max(hits, key=lambda letter: len(_norm(offered[letter])), default=None)
    return longest


class ChoiceTask(Task):
    name = "choice"

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        return choice_answer(response, options(prompt))
