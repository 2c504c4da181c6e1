"""Free-form answers (code, summaries, chat): no single right answer, so scored by overlap with the reference.

evaluate reports chrF (sacrebleu, 0-100; character n-grams, robust for code and short texts), ROUGE-L F
(rouge-score, 0-1), corpus BLEU (sacrebleu, 0-100) and exact match (whitespace-normalised); no task accuracy.
GRPO's reward is the response's chrF against the reference, scaled to [0, 1].
"""
from __future__ import annotations

from core import metrics as m
from tasks.base import Task


def _norm(text: str) -> str:
    return " ".join(text.split())


class FreeFormTask(Task):
    name = "free_form"
    checkable = False

    def extract(self, response: str, prompt: list[dict]) -> str | None:
        return _norm(response) or None

    def score(self, response: str, reference: str, prompt: list[dict]) -> float:
        return m.chrf([response], [reference]) / 100

    def metrics(self, responses, references, prompts) -> dict[str, float]:
        n = max(len(references), 1)
        return {"exact_match": sum(_norm(a) == _norm(r) for a, r in zip(responses, references)) / n,
                "chrf": m.chrf(responses, references), "rouge_l": m.rouge_l(responses, references),
                "bleu": m.bleu(responses, references)}

    @property
    def primary_metric(self) -> str:
        return "chrf"
