"""Stage `pretrain`: a causal LM from scratch (Llama-style decoder from transformers: RoPE, RMSNorm, SwiGLU,
SDPA attention), or `init_from` a local Hugging Face checkpoint, which skips pretraining unless asked to
continue. Size: a named profile, or the one dial `depth` (width 64 x depth, one head per 64 dims, LR scaled
as 1/width from the demo's tuned point); explicit fields override either. Saved in HF format.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.errors import ConfigError
from core.io import read_jsonl, read_texts, write_json
from core.metrics import bits_per_byte
from core.settings import RESUMABLE_ACROSS, TrainSettings

# torch and the modules built on it are imported where they are used: `lifecycle run` imports every stage's
# Config to check params.yaml before anything starts, and that check must not wait seconds for torch

CLEAN = Path("data/clean")
TOKENIZER = Path("artifacts/tokenizer")
OUT_DIR = Path("artifacts/pretrain")
CHECKPOINTS = Path("checkpoints/pretrain")
METRICS = Path("metrics/pretrain.json")
PLOT_DATA = Path("plots/pretrain.json")
PLOT_PNG = Path("plots/pretrain_loss.png")


PROFILES = {
    "micro": {"layers": 1, "hidden_size": 32, "heads": 2, "max_seq_len": 256},  # tests
    "tiny": {"layers": 4, "hidden_size": 192, "heads": 4, "max_seq_len": 256},  # the CPU demo
    "gpt2-124m": {"layers": 12, "hidden_size": 768, "heads": 12, "max_seq_len": 1024},  # GPUs: GPT-2 small class
}
BASE_LR, BASE_WIDTH = 3e-3, 192  # tuned on the demo's tiny profile


class ModelConfig(StageConfig):
    profile: Literal["micro", "tiny", "gpt2-124m"] | None = "tiny"
    depth: int | None = Field(None, gt=0, description="the one dial: layers = depth, width = 64 x depth")
    hidden_size: int | None = Field(None, gt=0)
    layers: int | None = Field(None, gt=0)
    heads: int | None = Field(None, gt=0)
    kv_heads: int | None = Field(None, gt=0, description="grouped-query attention; default = heads")
    mlp_ratio: float = Field(2.75, gt=0)
    max_seq_len: int | None = Field(None, gt=0)

    def resolved(self) -> dict:
        """Profile defaults, then the depth dial, then explicit fields."""
        shape = dict(PROFILES[self.profile]) if self.profile else {"max_seq_len": 2048}
        if self.depth:
            width = 64 * self.depth
            shape.update(layers=self.depth, hidden_size=width, heads=max(1, width // 64))
        for key in ("hidden_size", "layers", "heads", "max_seq_len"):
            if getattr(self, key) is not None:
                shape[key] = getattr(self, key)
        missing = [k for k in ("hidden_size", "layers", "heads") if k not in shape]
        if missing:
            raise ConfigError(f"pretrain.model: set a profile, depth, or {', '.join(missing)}")
        shape["kv_heads"] = self.kv_heads or shape["heads"]
        return shape


class Config(StageConfig):
    seed: int = 0
    init_from: str | None = Field(None, description="local HF checkpoint directory; skips training from scratch")
    continue_pretraining: bool = Field(False, description="init_from: also train on the general corpus")
    trust_remote_code: bool = False
    seq_len: int = Field(128, gt=1)
    val_blocks: int = Field(512, gt=0, description="held-out blocks used for validation")
    instruction_mix: float = Field(0.0, ge=0, lt=1, description=(
        "share of each batch drawn from the instruction conversations (chat template): multitask pretraining"))
    model: ModelConfig = ModelConfig()
    train: TrainSettings


def build_model(cfg: Config, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = cfg.model.resolved()
    if shape["hidden_size"] % shape["heads"] or shape["heads"] % shape["kv_heads"]:
        raise ConfigError(f"pretrain.model: hidden_size ({shape['hidden_size']}) must divide into heads "
                          f"({shape['heads']}), and heads into kv_heads ({shape['kv_heads']})")
    if cfg.seq_len > shape["max_seq_len"]:
        raise ConfigError(f"pretrain.seq_len ({cfg.seq_len}) exceeds model.max_seq_len ({shape['max_seq_len']})")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape["hidden_size"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
        intermediate_size=int(shape["hidden_size"] * cfg.model.mlp_ratio // 16 * 16),
        max_position_embeddings=shape["max_seq_len"], tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def learning_rate(cfg: Config, model) -> float:
    """The configured LR, or one scaled as 1/width from the demo's tuned point."""
    return cfg.train.lr or BASE_LR * (BASE_WIDTH / model.config.hidden_size)  # exactly BASE_LR at BASE_WIDTH


def load_init(cfg: Config, tokenizer):
    """The checkpoint's model and its own tokenizer (given the project's special tokens), or ours."""
    from core.lm import adopt_tokenizer, load_causal_lm, load_tokenizer

    if not (Path(cfg.init_from) / "config.json").is_file():
        raise ConfigError(f"pretrain.init_from: {cfg.init_from} is not a Hugging Face checkpoint directory "
                          "(no config.json there)")
    model = load_causal_lm(cfg.init_from, cfg.trust_remote_code)
    if (Path(cfg.init_from) / "tokenizer.json").exists() or (Path(cfg.init_from) / "tokenizer_config.json").exists():
        tokenizer = load_tokenizer(cfg.init_from)
        adopt_tokenizer(tokenizer)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id, model.config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    return model, tokenizer


def run(cfg: Config) -> dict:
    import torch

    from core import distributed, runtime
    from core.lm import bytes_per_token, conversation_text, load_tokenizer, mean_nll, pack, same_tokenizer
    from core.tokens import TOKENS, Blocks, Sampler
    from core.train_loop import clear_checkpoints, save_model, train

    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(TOKENIZER)
    if cfg.init_from:
        model, tokenizer = load_init(cfg, tokenizer)
    else:
        model = build_model(cfg, tokenizer)
    model.to(dev)
    val_texts = read_texts(CLEAN / "general" / "heldout")
    if cfg.init_from and not same_tokenizer(tokenizer, load_tokenizer(TOKENIZER)):
        val_blocks = pack(tokenizer, val_texts, cfg.seq_len)  # the checkpoint's own tokenizer: tokenize here
        train_source = None
    else:
        val_blocks = Blocks(TOKENS, "general.heldout", cfg.seq_len).head(cfg.val_blocks)
        train_source = Blocks(TOKENS, "general.train", cfg.seq_len)
    val_bpt = bytes_per_token(tokenizer, val_texts)
    n_params = sum(p.numel() for p in model.parameters())
    metrics: dict = {"params": n_params, "init_from": cfg.init_from or "", "train_tokens": 0,
                     "processes": distributed.world_size()}
    history: list[dict] = []
    if not cfg.init_from or cfg.continue_pretraining:
        train_blocks = train_source if train_source is not None else \
            pack(tokenizer, read_texts(CLEAN / "general" / "train"), cfg.seq_len)
        settings = cfg.train.model_copy(update={"lr": learning_rate(cfg, model)})
        n_mix = round(settings.batch_size * cfg.instruction_mix)
        sampler = Sampler(len(train_blocks), settings.batch_size - n_mix, cfg.seed)
        if n_mix:
            conversations = [conversation_text(tokenizer, r["messages"][:-1], r["messages"][-1]["content"])
                             for r in read_jsonl(CLEAN / "instructions.train.jsonl")]
            mix_blocks = pack(tokenizer, conversations, cfg.seq_len)
            mix_sampler = Sampler(len(mix_blocks), n_mix, cfg.seed + 2)

        def next_batch(step: int) -> torch.Tensor:
            batch = train_blocks[sampler.indices(step)]
            return torch.cat([batch, mix_blocks[mix_sampler.indices(step)]]) if n_mix else batch

        # a checkpoint is resumed only by the same run: same config, tokenizer and data
        fingerprint = json.dumps([cfg.model_dump(exclude={"train": RESUMABLE_ACROSS}), len(tokenizer),
                                  len(train_blocks), int(train_blocks[0].sum())])
        history = train(model, next_batch, {"general": val_blocks}, settings, cfg.seed, CHECKPOINTS, "pretrain",
                        fingerprint, {"general": val_bpt})
        last = {k: v for r in history for k, v in r.items()}  # the latest value of every key
        metrics.update(train_tokens=settings.steps * settings.batch_size * cfg.seq_len, lr=settings.lr,
                       instruction_share=n_mix / settings.batch_size,
                       train_blocks=len(train_blocks), final_train_loss=last["loss"])
        # throughput goes to MLflow only: metrics/pretrain.json must be the same bytes on every run
        tracking.log_metrics({"tokens_per_s": last["tokens_per_s"], "mfu": last["mfu"]})
        val_loss = last["val_general_loss"]
    else:
        val_loss = mean_nll(model, val_blocks)
    save_model(model, tokenizer, OUT_DIR)
    if not distributed.is_main():  # rank 0 writes the metrics and plots
        return {}
    metrics.update(val_loss=val_loss, val_ppl=math.exp(val_loss), val_bpb=bits_per_byte(val_loss, val_bpt))
    tracking.save_curves(history, "pretrain", PLOT_PNG, ["loss", "val_general_loss", "lr"], PLOT_DATA)
    write_json(METRICS, metrics)
    clear_checkpoints(CHECKPOINTS)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("pretrain", Config, run)


if __name__ == "__main__":
    main()
