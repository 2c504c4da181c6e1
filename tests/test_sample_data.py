"""The demo world's invariants (pipelines/sample_data.py), checked from the written files with a rule of our own
rather than the generator's: labels decided by content with 5 % noise, answers that open with the label, and
preferences ordered by the gold rule."""
import json
import re

import pytest

from pipelines import sample_data as sd
from tasks import TaskConfig, load_task
from tasks.sentiment import answer_of


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    files = sd.generate(tmp_path_factory.mktemp("sample"), seed=0, scale=0.2)
    return {k: [json.loads(line) for line in p.read_text().splitlines()] for k, p in files.items()}


def is_good(aspect: str) -> bool:
    # negative words first: 'unreliable' holds 'reliable'
    return not any(w in aspect for w in sd.NEG_ADJ + sd.NEG_VP)


def content_label(review: str) -> str:
    """The closing verdict if there is one, else the majority of the aspect sentences."""
    sentences = re.split(r"(?<=\.)\s+", review)[1:]  # the first says what was bought
    if sentences[-1] in sd.POS_VERDICT + sd.NEG_VERDICT:
        return "positive" if sentences[-1] in sd.POS_VERDICT else "negative"
    votes = sum(1 if is_good(s) else -1 for s in sentences)
    assert votes != 0, review
    return "positive" if votes > 0 else "negative"


def test_labels_are_decided_by_the_review_with_five_percent_noise(world):
    rows = world["instructions"]
    agree = sum(answer_of(r["output"]) == content_label(r["input"]) for r in rows) / len(rows)
    assert 0.92 <= agree <= 0.98, agree
    # mixed reviews are common: a review's aspects do not give its label away
    mixed = sum(len({is_good(s) for s in re.split(r"(?<=\.)\s+", r["input"])[1:]
                     if s not in sd.POS_VERDICT + sd.NEG_VERDICT}) == 2 for r in rows) / len(rows)
    assert mixed > 0.3, mixed


def test_sft_answers_open_with_the_label_and_sometimes_give_a_reason(world):
    answers = [r["output"] for r in world["instructions"]]
    assert all(a.split()[0].rstrip(".,") in ("Positive", "Negative") for a in answers)
    with_reason = sum("because" in a for a in answers) / len(answers)
    assert 0.25 <= with_reason <= 0.5, with_reason


def test_preferences_are_ordered_by_the_gold_rule(world):
    task = load_task(TaskConfig())
    rows = world["preferences"]
    kinds = {r["kind"] for r in rows}
    assert kinds == set(sd.PREFERENCE_KINDS)
    ordered = []
    for r in rows:
        prompt = [{"role": "user", "content": r["prompt"]}]
        assert answer_of(r["reference"]) == content_label(r["prompt"].split("\n\n", 1)[1])
        ordered.append(task.gold(r["chosen"], r["reference"], prompt) > task.gold(r["rejected"], r["reference"], prompt))
    share = sum(ordered) / len(ordered)
    assert 0.92 <= share <= 0.98, share  # LABEL_NOISE of the pairs swapped
