"""Evaluation metrics on plain numbers and strings (the model-facing parts live in core.lm).

BLEU is sacrebleu's corpus BLEU and ROUGE-L rouge-score's F-measure, so the figures match what those
libraries report elsewhere; the rest are short formulas, each checked by hand in tests/test_metrics.py.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence


def perplexity(nll_nats: float, tokens: int) -> float:
    """exp of the mean next-token negative log-likelihood."""
    return math.exp(nll_nats / tokens)


def bits_per_byte(mean_nll_nats: float, bytes_per_token: float) -> float:
    """Mean nats per token -> bits per UTF-8 byte: comparable across tokenizers (a model with a larger vocabulary
    has a higher per-token loss but covers more bytes per token)."""
    return mean_nll_nats / math.log(2) / bytes_per_token


def bleu(hypotheses: Sequence[str], *reference_streams: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100); each stream holds one reference per hypothesis."""
    import sacrebleu

    return sacrebleu.corpus_bleu(list(hypotheses), [list(r) for r in reference_streams]).score


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus chrF (0-100): character n-gram F-score, robust for code and short answers."""
    import sacrebleu

    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (0-1, rouge-score with stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return sum(scores) / max(len(scores), 1)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams in the texts (lower-cased words): 1.0 = no n-gram repeats."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def win_rate(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Share of items where the candidate's score beats the baseline's, ties counting half."""
    if len(candidate) != len(baseline) or not candidate:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    wins = sum((c > b) + 0.5 * (c == b) for c, b in zip(candidate, baseline))
    return wins / len(candidate)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the items with replacement `resamples` times."""
    import numpy as np

    if not len(values):
        raise ValueError("bootstrap_ci needs at least one value")
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    means = x[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n); 0 for a single value)."""
    n = len(values)
    if not n:
        raise ValueError("mean_and_se needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, (var / n) ** 0.5
