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
    """The offered letter a text answers with, or None (no answer, or more than one option named)."""
    if not offered:
        return None
    upper, lower = "".join(offered), "".join(offered).lower()
    # "The answer is B", "Answer: (b)": a capital letter, or any letter in parentheses ("is a car" is no answer)
    stated = re.findall(rf"(?i:answer|option|choice)\s*(?:is|:)?\s*(?:\(([{upper}{lower}])\)|([{upper}])\b)", text)
    if stated:
        return "".join(stated[-1]).upper()
    alone = re.fullmatch(rf"\W*\(?([{upper}{lower}])\)?\W*", text.strip())
    if alone:
        return alone.group(1).upper()
    first = re.match(rf"\s*\(?([{upper}])[.):]\s", text)
    if first:
        return first.group(1).upper()
    said = f" {_norm(text)} "  # whole words: option "car" is not in "scary"
    hits = [letter for letter, option in offered.items() if _norm(option) and f" {_norm(option)} " in said]
    return hits[0] if len(hits) == 1 else None


class ChoiceTask(Task):
    name = "choice"

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        return choice_answer(response, options(prompt))
