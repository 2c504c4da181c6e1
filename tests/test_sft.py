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


def test_only_the_chat_rows_of_the_embedding_train(tok, tmp_path):
    """The rest of the tied embedding is the language model: after training it is byte-identical, the chat rows
    (mean-initialised first) moved, and the adapter learned."""
    model = tiny_model(tok)
    before = model.get_input_embeddings().weight.detach().clone()
    cfg = sft.Config(steps=3, batch_size=len(RECORDS), lr=1e-2,
                     lora=sft.LoraSettings(r=2, alpha=4, trainable_tokens=sft.CHAT_TOKENS))
    trainer = sft.build_trainer(cfg, model, tok, RECORDS, tmp_path)
    rows = sft.token_rows(tok, sft.CHAT_TOKENS)
    start = trainer.model.get_input_embeddings().weight.detach().clone()
    others = torch.ones(len(tok), dtype=torch.bool)
    others[rows] = False
    assert torch.allclose(start[rows], before[others].mean(0).expand(len(rows), -1))  # mean initialised
    trainer.train()
    merged = trainer.model.merge_and_unload()
    after = merged.get_input_embeddings().weight.detach()
    assert torch.equal(after[others], before[others])
    assert not torch.allclose(after[rows], start[rows])
    assert merged.get_output_embeddings().weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
    # the whole embedding trains when trainable_tokens is null (the default): the check above can fail
    model = tiny_model(tok)
    cfg = sft.Config(steps=3, batch_size=len(RECORDS), lr=1e-2, lora=sft.LoraSettings(r=2, alpha=4))
    trainer = sft.build_trainer(cfg, model, tok, RECORDS, tmp_path / "all")
    trainer.train()
    assert not torch.equal(trainer.model.merge_and_unload().get_input_embeddings().weight.detach()[others],
                           before[others])


def test_embedding_rows_train_at_their_own_rate(tok, tmp_path):
    """sft.embedding_lr: the saved embedding steps at its own rate, the adapter at lr; the scheduler scales both."""
    others = torch.ones(len(tok), dtype=torch.bool)
    others[sft.token_rows(tok, sft.CHAT_TOKENS)] = False  # the chat rows also move by their mean initialisation

    def moved(embedding_lr, folder):
        model = tiny_model(tok)
        before = model.get_input_embeddings().weight.detach().clone()
        cfg = sft.Config(steps=3, batch_size=len(RECORDS), lr=1e-2, embedding_lr=embedding_lr,
                         lora=sft.LoraSettings(r=2, alpha=4))
        trainer = sft.build_trainer(cfg, model, tok, RECORDS, tmp_path / folder)
        trainer.train()
        after = trainer.model.merge_and_unload().get_input_embeddings().weight.detach()
        return (after - before)[others].abs().max().item(), trainer.optimizer.param_groups

    shared, groups = moved(None, "shared")
    assert len(groups) == 2  # the Trainer's own AdamW: decay and no-decay groups, one rate
    slow, groups = moved(1e-5, "slow")
    assert [g["initial_lr"] for g in groups] == [1e-2, 1e-5]
    assert 0 < slow < shared / 100  # Adam's steps scale with the rate: 1000x smaller, not merely smaller


def test_replay_rows_train_documents_as_plain_text(tok, tmp_path):
    docs = [f"Document number {i} is about rivers." for i in range(10)]
    cfg = sft.Config(steps=1, batch_size=4, replay_fraction=0.5, lora=sft.LoraSettings(r=2, alpha=4))
    trainer = sft.build_trainer(cfg, tiny_model(tok), tok, RECORDS, tmp_path, replay=docs)
    assert len(trainer.train_dataset) == 2 * len(RECORDS)  # half the rows are documents
    batch = next(iter(trainer.get_train_dataloader()))  # the labels are what the loss trains on
    trained = [tok.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"])]
    everything = [tok.decode(row["input_ids"]) for row in trainer.train_dataset]
    assert sum("Document number" in t for t in everything) == len(RECORDS)
    assert all("<|system|>" in t for t in everything if "Document number" in t)
    assert any(t.startswith("Document number") and t.endswith("rivers.<|end|>") for t in trained)
