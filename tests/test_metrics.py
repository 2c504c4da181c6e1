"""Every evaluation metric on a tiny case worked out by hand (or, for BLEU, sacrebleu's own documented example)."""
import math
from types import SimpleNamespace

import pytest
import torch

from core import metrics


class FixedLM:
    """A 'model' whose next-token distribution is the same at every position."""

    device = torch.device("cpu")

    def __init__(self, probs):
        self.logits = torch.log(torch.tensor(probs))

    def eval(self):
        return self

    def __call__(self, input_ids):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_perplexity_by_hand():
    from core.lm import nll_sum

    # targets 1, 2, 3 at p = 1/4, 1/8, 1/8: nll = ln 4 + ln 8 + ln 8 = ln 256 over 3 tokens
    total, count = nll_sum(FixedLM([0.5, 0.25, 0.125, 0.125]), torch.tensor([[0, 1, 2, 3]]))
    assert count == 3
    assert total == pytest.approx(math.log(256))
    assert metrics.perplexity(total, count) == pytest.approx(256 ** (1 / 3))
    uniform_total, uniform_count = nll_sum(FixedLM([0.25] * 4), torch.tensor([[3, 1, 0, 2, 2]]))
    assert metrics.perplexity(uniform_total, uniform_count) == pytest.approx(4.0)


def test_bits_per_byte_by_hand():
    # 2 bits per token (ln 4 nats), 4 bytes per token -> half a bit per byte
    assert metrics.bits_per_byte(math.log(4), 4.0) == pytest.approx(0.5)


def test_bleu_matches_sacrebleus_documented_example():
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs1 = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
    refs2 = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]
    assert metrics.bleu(hyps, refs1, refs2) == pytest.approx(48.53, abs=0.01)
    assert metrics.bleu(["the review is positive"], ["the review is positive"]) == pytest.approx(100.0)


def test_rouge_l_by_hand():
    # LCS 3 words: precision 3/3, recall 3/6, F = 2PR/(P+R) = 2/3
    assert metrics.rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    assert metrics.rouge_l(["positive", "negative"], ["positive", "positive"]) == pytest.approx(0.5)


def test_distinct_n_by_hand():
    assert metrics.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert metrics.distinct_n(["A b", "c"], 1) == 1.0
    assert metrics.distinct_n(["one"], 2) == 0.0


def test_win_rate_on_fixed_scores():
    # wins 1 > 0 and 4 > 1, tie 2 = 2 counts half, 3 < 5 loses
    assert metrics.win_rate([1, 2, 3, 4], [0, 2, 5, 1]) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError):
        metrics.win_rate([1.0], [])


def test_bootstrap_interval_and_standard_error_by_hand():
    values = [0.0, 1.0] * 50  # mean 0.5; the mean of 100 coin flips has sd 0.05
    low, high = metrics.bootstrap_ci(values, resamples=4000, seed=0)
    assert low < 0.5 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.05, rel=0.15)
    assert metrics.bootstrap_ci([0.7] * 20) == (pytest.approx(0.7), pytest.approx(0.7))  # no spread, no interval
    mean, se = metrics.mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)  # sample sd sqrt(5/3), n = 4
    assert metrics.mean_and_se([3.0]) == (3.0, 0.0)
