"""Stage `domain`: continued pretraining on the domain corpus, with forgetting measured.

mode: sequential -> domain data, plus `replay_fraction` of each batch drawn from the general corpus;
mode: joint      -> a mixture in which `domain_ratio` of each batch is domain data (BloombergGPT-style).
General and domain perplexity are measured before and after on held-out text.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.io import read_texts, write_json
from core.metrics import bits_per_byte
from core.settings import RESUMABLE_ACROSS, TrainSettings

# torch and what is built on it are imported in run(): `lifecycle run` imports every stage's Config to check
# params.yaml, and that check must not wait for torch

CLEAN = Path("data/clean")
BASE = Path("artifacts/pretrain")
TOKENIZER = Path("artifacts/tokenizer")
OUT_DIR = Path("artifacts/domain")
CHECKPOINTS = Path("checkpoints/domain")
METRICS = Path("metrics/domain.json")
PLOT_DATA = Path("plots/domain.json")
PLOT_PNG = Path("plots/domain_loss.png")


class Config(StageConfig):
    seed: int = 0
    mode: Literal["sequential", "joint"] = "sequential"
    replay_fraction: float = Field(0.25, ge=0, lt=1, description="sequential: share of general data per batch")
    domain_ratio: float = Field(0.5, gt=0, le=1, description="joint: share of domain data per batch")
    seq_len: int = Field(128, gt=1)
    val_blocks: int = Field(512, gt=0, description="held-out blocks per corpus used for validation")
    train: TrainSettings


def general_share(cfg: Config) -> float:
    return cfg.replay_fraction if cfg.mode == "sequential" else 1.0 - cfg.domain_ratio


def run(cfg: Config) -> dict:
    import torch

    from core import distributed, runtime
    from core.lm import bytes_per_token, load_causal_lm, load_tokenizer, mean_nll, pack, same_tokenizer
    from core.tokens import TOKENS, Blocks, Sampler
    from core.train_loop import clear_checkpoints, save_model, train

    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(BASE)
    model = load_causal_lm(BASE).to(dev)

    if same_tokenizer(tokenizer, load_tokenizer(TOKENIZER)):  # the project's tokenizer: its memory-mapped token files
        def blocks(name: str, split: str):
            return Blocks(TOKENS, f"{name}.{split}", cfg.seq_len)
    else:  # a base model that came with its own tokenizer (pretrain.init_from)
        def blocks(name: str, split: str):
            return pack(tokenizer, read_texts(CLEAN / name / split), cfg.seq_len)

    def head(b):
        return b.head(cfg.val_blocks) if isinstance(b, Blocks) else b[:cfg.val_blocks]

    domain_train, general_train = blocks("domain", "train"), blocks("general", "train")
    val = {"domain": head(blocks("domain", "heldout")), "general": head(blocks("general", "heldout"))}
    before = {name: mean_nll(model, b) for name, b in val.items()}
    n_general = round(cfg.train.batch_size * general_share(cfg))
    # separate seeded shuffles for the two sources: a pure function of the step
    domain_sampler = Sampler(len(domain_train), cfg.train.batch_size - n_general, cfg.seed)
    general_sampler = Sampler(len(general_train), n_general, cfg.seed + 1)

    def next_batch(step: int) -> torch.Tensor:
        parts = [domain_train[domain_sampler.indices(step)]]
        if n_general:
            parts.append(general_train[general_sampler.indices(step)])
        return torch.cat(parts)

    fingerprint = json.dumps([cfg.model_dump(exclude={"train": RESUMABLE_ACROSS}), len(tokenizer), len(domain_train),
                              len(general_train), int(domain_train[0].sum()), before])
    bpt = {name: bytes_per_token(tokenizer, read_texts(CLEAN / name / "heldout")) for name in val}
    history = train(model, next_batch, val, cfg.train, cfg.seed, CHECKPOINTS, f"domain ({cfg.mode})", fingerprint,
                    bpt)
    after = {name: mean_nll(model, b) for name, b in val.items()}
    save_model(model, tokenizer, OUT_DIR)
    if not distributed.is_main():  # rank 0 writes the metrics and plots
        return {}
    metrics = {
        "mode": cfg.mode, "processes": distributed.world_size(), "general_share": n_general / cfg.train.batch_size,
        "ppl_domain_before": math.exp(before["domain"]), "ppl_domain_after": math.exp(after["domain"]),
        "ppl_general_before": math.exp(before["general"]), "ppl_general_after": math.exp(after["general"]),
        # forgetting: relative rise of held-out general perplexity caused by this stage
        "forgetting": math.exp(after["general"] - before["general"]) - 1.0,
        "bpb_domain_after": bits_per_byte(after["domain"], bpt["domain"]),
        "bpb_general_after": bits_per_byte(after["general"], bpt["general"]),
    }
    tracking.save_curves(history, f"domain ({cfg.mode})", PLOT_PNG, ["loss", "val_domain_loss", "val_general_loss"],
                         PLOT_DATA)
    write_json(METRICS, metrics)
    clear_checkpoints(CHECKPOINTS)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("domain", Config, run)


if __name__ == "__main__":
    main()
