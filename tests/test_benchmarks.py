"""The benchmarks' pair summary: what a handful of alternating runs can and cannot support."""
import pytest

from benchmarks.pairs import summarise


def test_a_disturbed_pair_is_named_and_the_interval_says_no_difference():
    s = summarise([1.00, 1.01, 0.99, 1.02, 0.98, 0.79])  # the last pair ran beside other load
    assert s["median"] == pytest.approx(0.995) and s["spread"] == [0.79, 1.02] and s["pairs"] == 6
    assert s["outlier_pairs"] == [5]
    assert s["ci95"][0] <= 1.0 <= s["ci95"][1] and "no difference shown" in s["note"]


def test_a_steady_gain_excludes_one_and_too_few_pairs_say_so():
    s = summarise([1.10, 1.12, 1.11, 1.09, 1.13, 1.10, 1.11])
    assert s["ci95"][0] > 1.0 and s["outlier_pairs"] == [] and s["note"].startswith("faster by 11.0%")
    assert "only 3 pairs" in summarise([0.99, 0.79, 0.98])["note"]
