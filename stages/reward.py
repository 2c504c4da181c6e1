"""Stage `reward`: a scalar reward model trained from the SFT model with TRL's RewardTrainer.

Reports held-out pairwise accuracy (share of held-out pairs where chosen scores above rejected) and margin,
per preference `kind` where the records carry one, and beside it the ceiling noisy labels set: the share of
held-out pairs whose order the task's gold rule agrees with (`gold_agreement`, on pairs that carry their
`reference` answer). A reward model can beat its labels' noise only by luck; below the gold rule's agreement it has
learned less than the data holds.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from core import tracking
from core.io import read_jsonl, weight_bytes, write_json
from core.settings import LoraSettings, TrainerSettings
from tasks import TaskConfig, load_task

# torch, transformers and TRL (and core.lm, core.hf_trainers) are imported where they are used: `lifecycle run`
# imports every stage's Config to check params.yaml, and that check must not wait for them

CLEAN = Path("data/clean")
BASE = Path("artifacts/sft")
OUT_DIR = Path("artifacts/reward")
WORK = Path("checkpoints/reward")
METRICS = Path("metrics/reward.json")
PLOT_DATA = Path("plots/reward.json")
PLOT_PNG = Path("plots/reward_curves.png")


class Config(TrainerSettings):
    INCLUDE: ClassVar[tuple[str, ...]] = ("task",)
    task: TaskConfig = TaskConfig()
    seed: int = 0
    lr: float = Field(5e-4, gt=0)
    max_length: int = Field(256, gt=8)
    center_rewards_coefficient: float | None = Field(0.01, ge=0)
    lora: LoraSettings | None = Field(None, description="train through a LoRA adapter (the score head in full); "
                                                        "null: full fine-tuning")


def pairwise(model, tokenizer, records: list[dict]) -> dict:
    import torch

    from core.lm import reward_scores

    prompts = [r["prompt"] for r in records]
    chosen = torch.tensor(reward_scores(model, tokenizer, prompts, [r["chosen"] for r in records]))
    rejected = torch.tensor(reward_scores(model, tokenizer, prompts, [r["rejected"] for r in records]))
    return {"accuracy": (chosen > rejected).float().mean().item(), "margin": (chosen - rejected).mean().item(),
            "mean_chosen": chosen.mean().item(), "mean_rejected": rejected.mean().item(), "pairs": len(records)}


def by_kind(model, tokenizer, records: list[dict], task) -> dict:
    """Held-out accuracy per preference kind, and the gold rule's agreement with the labels (overall, per kind)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r.get("kind", "all")].append(r)
    out: dict[str, dict] = {"accuracy_by_kind": {}, "gold_agreement_by_kind": {}}
    judged = []
    for kind, rows in sorted(groups.items()):
        if kind != "all":
            out["accuracy_by_kind"][kind] = pairwise(model, tokenizer, rows)["accuracy"]
        with_ref = [r for r in rows if "reference" in r]
        agree = [task.gold(r["chosen"], r["reference"], r["prompt"]) > task.gold(r["rejected"], r["reference"],
                                                                                 r["prompt"]) for r in with_ref]
        judged += agree
        if agree and kind != "all":
            out["gold_agreement_by_kind"][kind] = sum(agree) / len(agree)
    if judged:
        out["gold_agreement"] = sum(judged) / len(judged)
    return {k: v for k, v in out.items() if v != {}}


def build_trainer(cfg: Config, base: Path, tokenizer, records: list[dict], work_dir: Path, callbacks=()):
    """A scalar-head model from `base` and TRL's RewardTrainer on the pairs; returns (model, trainer)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from core.hf_trainers import to_trl_pairs
    from core.lm import load_pretrained, right_padded

    model = load_pretrained(AutoModelForSequenceClassification, base, "SFT model", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora:
        cfg.lora.check(model, "reward.lora")
    args = RewardConfig(**cfg.trl_args(work_dir, cfg.seed), max_length=cfg.max_length,
                        center_rewards_coefficient=cfg.center_rewards_coefficient)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(to_trl_pairs(records)),
                            processing_class=right_padded(tokenizer), callbacks=list(callbacks),
                            peft_config=cfg.lora.peft_config("SEQ_CLS") if cfg.lora else None)
    return model, trainer


def run(cfg: Config) -> dict:
    from core import hf_trainers, runtime
    from core.hf_trainers import StageLog
    from core.lm import load_tokenizer

    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(BASE)
    train_records = read_jsonl(CLEAN / "preferences.train.jsonl")
    heldout = read_jsonl(CLEAN / "preferences.heldout.jsonl")
    _, trainer = build_trainer(cfg, BASE, tokenizer, train_records, WORK, [StageLog("reward")])
    hf_trainers.train(trainer, "reward", WORK, hf_trainers.fingerprint(cfg, BASE, CLEAN / "preferences.train.jsonl"))
    model = trainer.model.to(dev)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    share = trainable / sum(p.numel() for p in model.parameters())
    if cfg.lora:
        model = model.merge_and_unload()
    metrics = {f"heldout_{k}" if k != "accuracy" else k: v for k, v in pairwise(model, tokenizer, heldout).items()}
    metrics.update(by_kind(model, tokenizer, heldout, load_task(cfg.task)))
    metrics["train_accuracy"] = pairwise(model, tokenizer, train_records[:256])["accuracy"]
    metrics.update(trainable_params=trainable, trainable_share=share)
    hf_trainers.save_model(OUT_DIR, WORK, tokenizer, weight_bytes(model),
                           lambda folder: model.save_pretrained(folder, safe_serialization=True))
    rows = hf_trainers.logged_rows(trainer, "loss")
    tracking.save_curves(rows, "reward model", PLOT_PNG, ["loss", "accuracy", "margin"], PLOT_DATA)
    write_json(METRICS, metrics)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("reward", Config, run)


if __name__ == "__main__":
    main()
