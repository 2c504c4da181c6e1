"""What alternating runs can support: the ratio of each (ours, baseline) pair measured back to back, their median
with a bootstrap 95 % interval, and the pairs that sit far from the rest (a run hit by other load on the machine).

A ratio of medians hides the spread; a single pair cannot tell a 2 % gain from noise. The summary says both."""
from __future__ import annotations

import random
import statistics

OUTLIER = 0.10  # a pair more than 10 % from the median of the others: likely disturbed by other load


def summarise(ratios: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """{median, ci95 [low, high], spread [min, max], pairs, outlier_pairs (indices), note}."""
    if not ratios:
        raise ValueError("no pairs to summarise")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    low, high = medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
    outliers = [i for i, r in enumerate(ratios) if len(ratios) > 2
                and abs(r / statistics.median(ratios[:i] + ratios[i + 1:]) - 1) > OUTLIER]
    median = statistics.median(ratios)
    if len(ratios) < 5:
        note = f"only {len(ratios)} pairs: the interval is too wide to read a few percent off it; run more"
    elif low <= 1 <= high:
        note = "the interval holds 1.0: no difference shown"
    else:
        note = f"{'faster' if median > 1 else 'slower'} by {abs(median - 1):.1%} (interval excludes 1.0)"
    if outliers:
        note += f"; pair(s) {outliers} sit over {OUTLIER:.0%} from the rest (other load?)"
    return {"median": round(median, 4), "ci95": [round(low, 4), round(high, 4)],
            "spread": [round(min(ratios), 4), round(max(ratios), 4)], "pairs": len(ratios),
            "outlier_pairs": outliers, "note": note}
