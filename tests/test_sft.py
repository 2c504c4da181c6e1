"""SFT: the loss covers the assistant's answer (and its turn end) and nothing else, packed or not."""
import pytest
import torch

from stages import sft
from stages import tokenizer as tokenizer_stage

RECORDS = [
    {"messages": [{"role": "system", "content": "Answer in one word."},
                  {"role": "user", "content": "Is this review positive or negative? It broke in a day."},
                  {"role": "assistant", "content": "negative"}]},
    {"messages": [{"role": "user", "content": "Is this review positive or negative? I love it."},
                  {"role": "assistant", "content": "The review is positive."}]},
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi there"}]},
]


@pytest.fixture(scope="module")
def tok():
    texts = [m["content"] for r in RECORDS for m in r["messages"]] * 30
    return tokenizer_stage.build(texts, tokenizer_stage.Config(vocab_size=300))


def tiny_model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, tie_word_embeddings=True,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))


@pytest.mark.parametrize("packing", [False, True])
def test_labels_cover_the_answers_only(tok, tmp_path, packing):
    cfg = sft.Config(steps=1, batch_size=len(RECORDS), packing=packing, lora=sft.LoraSettings(r=2, alpha=4))
    trainer = sft.build_trainer(cfg, tiny_model(tok), tok, RECORDS, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape
    trained = [tok.decode(ids[row][labels[row] != -100]) for row in range(len(ids))]
    expected = {r["messages"][-1]["content"] + "<|end|>" for r in RECORDS}
    if packing:  # conversations share rows: every answer is trained, in some row, and nothing else
        text = "".join(trained)
        assert all(answer in text for answer in expected)
        assert len(text) == sum(len(a) for a in expected)
    else:
        assert set(trained) == expected
    # nothing of a prompt is ever a label: no user text, no role marker
    assert not any(w in "".join(trained) for w in ("<|user|>", "<|assistant|>", "review positive or", "Say hi"))


def test_qlora_without_a_gpu_is_a_clear_config_error(tmp_path, monkeypatch):
    from core.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = sft.Config(steps=1, quantization="4bit")
    with pytest.raises(ConfigError, match="sft.quantization: 4bit .QLoRA. needs a CUDA GPU and the bitsandbytes"):
        sft.load_4bit(tmp_path, cfg)
