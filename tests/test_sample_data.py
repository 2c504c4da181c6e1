"""The demo world's invariants (pipelines/sample_data.py), checked from the written files with a rule of our own
rather than the generator's: labels decided by content with 5 % noise, answers that open with the label, reasons
that quote what decides the label, and preferences ordered by the gold rule."""
import json
import re

import pytest

from pipelines import sample_data as sd
from tasks import TaskConfig, load_task
from tasks.sentiment import answer_of, reason_of


TASK = load_task(TaskConfig())


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
    rows = world["preferences"]
    kinds = {r["kind"] for r in rows}
    assert kinds == set(sd.PREFERENCE_KINDS)
    ordered = []
    for r in rows:
        assert answer_of(r["reference"]) == content_label(r["prompt"].split("\n\n", 1)[1])
        ordered.append(in_order(r))
    share = sum(ordered) / len(ordered)
    assert 0.92 <= share <= 0.98, share  # LABEL_NOISE of the pairs swapped


def deciding_sentences(review: str) -> list[str]:
    """What decides the label, by the rule above: the verdict, else the aspects on the majority's side."""
    sentences = re.split(r"(?<=\.)\s+", review)[1:]
    if sentences[-1] in sd.POS_VERDICT + sd.NEG_VERDICT:
        return [sentences[-1]]
    label = content_label(review)
    return [s for s in sentences if is_good(s) == (label == "positive")]


def in_order(r: dict) -> bool:
    """A preference pair the noise did not swap: the gold rule prefers its chosen answer."""
    prompt = [{"role": "user", "content": r["prompt"]}]
    return TASK.gold(r["chosen"], r["reference"], prompt) > TASK.gold(r["rejected"], r["reference"], prompt)


def clauses(sentences: list[str]) -> set[str]:
    """Sentences as reason_of reads a quoted reason: lower-cased, without the full stop."""
    return {s.lower().rstrip(".") for s in sentences}


VERDICTS = clauses(sd.POS_VERDICT + sd.NEG_VERDICT)


def test_a_quoted_reason_is_the_sentence_that_decides_the_label(world):
    # SFT answers with their true label and preferences' justified answers quote the verdict, else an aspect on the
    # label's side: the reason a reader would give, not any sentence of the review
    rows = [(r["input"], r["output"]) for r in world["instructions"]
            if answer_of(r["output"]) == content_label(r["input"])]
    rows += [(r["prompt"].split("\n\n", 1)[1], r["chosen"]) for r in world["preferences"]
             if r["kind"] in ("justification", "concision", "grounding") and in_order(r)]
    with_reason = [(review, a) for review, a in rows if "because" in a]
    assert len(with_reason) > 100
    assert all(reason_of(a) in clauses(deciding_sentences(review)) for review, a in with_reason)
    verdicts = sum(reason_of(a) in VERDICTS for _, a in with_reason) / len(with_reason)
    assert 0.5 < verdicts < 0.9, verdicts  # 70 % of reviews close with a verdict


def test_made_up_and_contradicted_reasons_are_what_the_rejected_answers_give(world):
    grounding = [r for r in world["preferences"] if r["kind"] == "grounding" and in_order(r)]
    # a grounding pair's rejected answer has the right label and a reason the review never gives: a verdict half the
    # time, so telling them apart takes reading the review, not recognising a form
    assert all(answer_of(r["rejected"]) == r["reference"] and reason_of(r["rejected"]) not in r["prompt"].lower()
               for r in grounding)
    made_up_verdicts = sum(reason_of(r["rejected"]) in VERDICTS for r in grounding) / len(grounding)
    assert 0.3 < made_up_verdicts < 0.7, made_up_verdicts
    # correctness pairs include the review's own reason under the wrong label: the label must agree with the reason
    contradicted = [r for r in world["preferences"] if r["kind"] == "correctness" and "because" in r["rejected"]
                    and in_order(r)]
    assert len(contradicted) > 20
    assert all(reason_of(r["chosen"]) == reason_of(r["rejected"]) and answer_of(r["rejected"]) != r["reference"]
               for r in contradicted)
