"""A number as the answer, GSM8K's convention (Cobbe et al. 2021; nanochat's tasks/gsm8k.py reads `####` the same way).

A reference's answer follows `####` ("... so she has 18 apples.\n#### 18"), or, in a short plain reference ("18",
"The answer is $18."; at most 8 words, no code or formula symbols), is its last number. Anything else holds no
reference answer, so code or prose that merely contains numbers does not pass for numeric references. A
response's answer is the number after its `####` if it writes one, else its last number. Numbers are compared
as values: "1,000", "$1000", "1000.00" and "1e3" are all 1000.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from tasks.base import Task

# a minus sign only where it cannot be a hyphen ("10-5", "2023-01-02"); commas only in thousands groups; a/b fractions
NUMBER = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+)?(?![\d,]*\d)"
                    r"|(?<![\w.])-?\.\d+")
MARKER = re.compile(r"####\s*(.+)")


def canonical(text: str) -> str | None:
    """'$1,000.50' -> '1000.5'; '18.0' -> '18'; '4/6' -> '2/3'; None when it is not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        if "/" in cleaned:
            value = Fraction(cleaned)
            return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
        value = Decimal(cleaned)
        if not value.is_finite():
            return None
        value = value.normalize()
        return format(value.quantize(Decimal(1)) if value == value.to_integral() else value, "f")
    except (InvalidOperation, ValueError, ZeroDivisionError):  # 1e30 does not quantize; 1/0
        return None


def last_number(text: str) -> str | None:
    for match in reversed(NUMBER.findall(text)):
        value = canonical(match)
        if value is not None:
            return value
    return None


def numeric_answer(text: str) -> str | None:
    marked = MARKER.findall(text)
    if marked:
        return last_number(marked[-1])
    return last_number(text)


SHORT_REFERENCE_WORDS = 8
CODE_OR_FORMULA = re.compile(r"[{}\[\]=;*+<>#]|\w\(|/\D")  # braces, operators, calls; not "Answer: 42 (rounded)"


class NumericTask(Task):
    name = "numeric"

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        return numeric_answer(response)

    def reference_answer(self, reference: str, prompt: list[dict]) -> str | None:
        if MARKER.search(reference):
            return numeric_answer(reference)
        if len(reference.split()) <= SHORT_REFERENCE_WORDS and not CODE_OR_FORMULA.search(reference):
            return last_number(reference)
        return None
