"""The reward stage's held-out report: accuracy per preference kind beside the gold rule's agreement with the labels."""
import pytest
import torch

from stages import reward
from tasks import TaskConfig, load_task

REVIEW = [{"role": "user", "content": "Is this review positive or negative?\n\nI bought this kettle. The lid is sturdy."}]


def pair(chosen: str, rejected: str, kind: str, reference: str = "positive") -> dict:
    return {"prompt": REVIEW, "chosen": chosen, "rejected": rejected, "kind": kind, "reference": reference}


def test_accuracy_and_gold_agreement_per_kind():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from stages import tokenizer as tokenizer_stage

    tok = tokenizer_stage.build(["The review is positive. The lid is sturdy."] * 50, tokenizer_stage.Config(vocab_size=300))
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=1, num_attention_heads=2, num_labels=1,
                                                       pad_token_id=tok.pad_token_id))
    records = [pair("Positive, because the lid is sturdy.", "positive", "justification"),
               pair("positive", "Positive, because the lid is sturdy.", "justification"),  # a swapped label
               pair("positive", "negative", "correctness"),
               pair("The review is positive.", "The review is negative.", "correctness"),
               {"prompt": REVIEW, "chosen": "positive", "rejected": "negative"}]  # no kind, no reference
    out = reward.by_kind(model, tok, records, load_task(TaskConfig()))
    assert set(out["accuracy_by_kind"]) == {"correctness", "justification"}
    assert out["gold_agreement_by_kind"] == {"correctness": 1.0, "justification": 0.5}
    assert out["gold_agreement"] == pytest.approx(3 / 4)  # over the pairs that carry a reference
    # the per-kind accuracy is the stage's own pairwise accuracy on that kind's pairs
    assert out["accuracy_by_kind"]["correctness"] == reward.pairwise(model, tok, records[2:4])["accuracy"]
