"""Stage `pretrain`: a causal LM from scratch (Llama-style decoder from transformers), or `init_from`
a local Hugging Face checkpoint. Warmup + cosine LR, gradient clipping, checkpoints; saved in HF format.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import Field

from core import runtime, tracking
from core.config import StageConfig
from core.errors import ConfigError
from core.io import atomic_dir, read_texts, write_json
from core.lm import bytes_per_token, load_causal_lm, load_tokenizer, pack
from core.train_loop import TrainSettings, clear_checkpoints, train

CLEAN = Path("data/clean")
TOKENIZER = Path("artifacts/tokenizer")
OUT_DIR = Path("artifacts/pretrain")
CHECKPOINTS = Path("checkpoints/pretrain")
METRICS = Path("metrics/pretrain.json")
PLOT_DATA = Path("plots/pretrain.json")
PLOT_PNG = Path("plots/pretrain_loss.png")


class ModelConfig(StageConfig):
    hidden_size: int = Field(192, gt=0)
    layers: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(2.75, gt=0)
    max_seq_len: int = Field(256, gt=0)


class Config(StageConfig):
    seed: int = 0
    init_from: str | None = Field(None, description="local HF checkpoint directory; skips training from scratch")
    trust_remote_code: bool = False
    seq_len: int = Field(128, gt=1)
    model: ModelConfig = ModelConfig()
    train: TrainSettings


def build_model(cfg: Config, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    m = cfg.model
    if m.hidden_size % m.heads:
        raise ConfigError(f"pretrain.model.hidden_size ({m.hidden_size}) must be divisible by heads ({m.heads})")
    if cfg.seq_len > m.max_seq_len:
        raise ConfigError(f"pretrain.seq_len ({cfg.seq_len}) exceeds model.max_seq_len ({m.max_seq_len})")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=m.hidden_size, num_hidden_layers=m.layers,
        num_attention_heads=m.heads, num_key_value_heads=m.heads,
        intermediate_size=int(m.hidden_size * m.mlp_ratio // 16 * 16), max_position_embeddings=m.max_seq_len,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def run(cfg: Config) -> dict:
    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(TOKENIZER)
    if cfg.init_from:
        model = load_causal_lm(cfg.init_from, cfg.trust_remote_code)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    else:
        model = build_model(cfg, tokenizer)
    model.to(dev)
    train_blocks = pack(tokenizer, read_texts(CLEAN / "general" / "train"), cfg.seq_len)
    val_texts = read_texts(CLEAN / "general" / "heldout")
    val_blocks = pack(tokenizer, val_texts, cfg.seq_len)

    def next_batch(gen: torch.Generator) -> torch.Tensor:
        return train_blocks[torch.randint(len(train_blocks), (cfg.train.batch_size,), generator=gen)]

    n_params = sum(p.numel() for p in model.parameters())
    # a checkpoint is resumed only by the same run: same config, tokenizer and data
    fingerprint = json.dumps([cfg.model_dump(), len(tokenizer), train_blocks.shape, int(train_blocks[:64].sum())])
    history = train(model, next_batch, {"general": val_blocks}, cfg.train, cfg.seed, CHECKPOINTS, "pretrain",
                    fingerprint, {"general": bytes_per_token(tokenizer, val_texts)})
    final_val = [r for r in history if "val_general_loss" in r][-1]["val_general_loss"]
    with atomic_dir(OUT_DIR) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    metrics = {
        "params": n_params, "train_tokens": cfg.train.steps * cfg.train.batch_size * cfg.seq_len,
        "train_blocks": len(train_blocks), "final_train_loss": [r for r in history if "loss" in r][-1]["loss"],
        "val_loss": final_val, "val_ppl": float(torch.tensor(final_val).exp()),
        "val_bpb": [r for r in history if "val_general_bpb" in r][-1]["val_general_bpb"],
        "tokens_per_s": [r for r in history if "tokens_per_s" in r][-1]["tokens_per_s"],
        "mfu": [r for r in history if "mfu" in r][-1]["mfu"],
    }
    tracking.save_curves(history, "pretrain", PLOT_PNG, ["loss", "val_general_loss", "lr"], PLOT_DATA)
    write_json(METRICS, metrics)
    clear_checkpoints(CHECKPOINTS)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("pretrain", Config, run)


if __name__ == "__main__":
    main()
