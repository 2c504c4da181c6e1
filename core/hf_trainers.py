"""Glue for transformers/TRL/PEFT: the TRL stages' shared settings and arguments, LoRA settings, the logging
callback, resumable training and the model folder every stage ends with."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch
from pydantic import Field
from transformers import TrainerCallback

from core import tracking
from core.config import StageConfig
from core.errors import ConfigError, LifecycleError
from core.io import atomic_dir

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(StageConfig):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ALL_LINEAR
    modules_to_save: list[str] = []

    def peft_config(self, task_type: str):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, modules_to_save=self.modules_to_save or None,
                          ensure_weight_tying=True, task_type=task_type)

    def check(self, model, where: str) -> None:
        """Every target module exists in the model (PEFT's own error does not say which key to fix)."""
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in self.target_modules if t not in names]
        if missing:
            raise ConfigError(f"{where}.target_modules: {missing} not found in the model "
                              f"(linear layers here: {sorted(n for n in names if n.endswith('proj'))})")


class TrainerSettings(StageConfig):
    """The training knobs every TRL stage (sft, reward, align.dpo, align.grpo) shares; each stage's class sets its
    own defaults where TRL's differ by method (lr, warmup)."""
    steps: int = Field(gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    log_every: int = Field(10, gt=0)
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory, slower steps")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: none)")

    def trl_args(self, output_dir: Path, seed: int) -> dict:
        """Arguments for a TRL config. bf16 only on a GPU that supports it. TRL turns gradient checkpointing on
        by default; it only trades time for memory, so it is a per-stage choice here, off by default
        (benchmarks/results/align.json measures the difference). `checkpoint_every` > 0 saves a resumable
        checkpoint (weights, optimizer, scheduler, RNG states) every so many steps, the last two kept."""
        gpu = torch.cuda.is_available()
        return dict(
            output_dir=str(output_dir), seed=seed, data_seed=seed, max_steps=self.steps,
            per_device_train_batch_size=self.batch_size, learning_rate=self.lr, lr_scheduler_type="cosine",
            warmup_steps=max(1, int(self.warmup_ratio * self.steps)), logging_steps=self.log_every,
            save_strategy="steps" if self.checkpoint_every else "no", save_steps=self.checkpoint_every or self.steps,
            save_total_limit=2, report_to="none", use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(),
            dataloader_num_workers=0, disable_tqdm=False, max_grad_norm=1.0,
            gradient_checkpointing=self.gradient_checkpointing,
        )


def to_trl_pairs(records: list[dict]) -> list[dict]:
    """Canonical preference records -> TRL's conversational {prompt, chosen, rejected} rows (reward model, DPO)."""
    return [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in records]


class StageLog(TrainerCallback):
    """Forwards each row the trainer logs to the stage's MLflow run, stops on a non-finite loss, and says where
    each checkpoint went (tests and people watching a run wait for these lines)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        loss = logs.get("loss")
        if loss is not None and not torch.isfinite(torch.tensor(loss)):
            raise LifecycleError(f"{self.stage}: loss is {loss} at step {state.global_step}; lower the learning rate "
                                 f"(the last good checkpoint, if any, stays in {args.output_dir})")
        if logs:
            tracking.log_metrics({k.replace("/", "_"): v for k, v in logs.items()}, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        print(f"{self.stage}: checkpoint at step {state.global_step} in {args.output_dir}/checkpoint-"
              f"{state.global_step}", flush=True)


def save_model(out_dir: Path, work_dir: Path, tokenizer, nbytes: int, write_weights: Callable[[Path], None]) -> None:
    """The stage's model folder, written whole or not at all: `write_weights(folder)` saves the weights, the
    tokenizer (left-padded, as core.lm.load_tokenizer gives it) goes beside them; then the checkpoints are dropped."""
    with atomic_dir(out_dir, nbytes) as tmp:
        write_weights(tmp)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(work_dir, ignore_errors=True)


def resume_point(work_dir: Path, fingerprint: str) -> str | None:
    """The newest complete checkpoint in `work_dir` of a run with this same `fingerprint` (configuration and
    inputs), or None. A work folder left by another configuration is cleared: its checkpoints cannot be resumed."""
    marker = work_dir / "fingerprint.json"
    if work_dir.exists() and (not marker.exists() or marker.read_text(encoding="utf-8") != fingerprint):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint, encoding="utf-8")
    steps = sorted((int(p.name.split("-")[1]), p) for p in work_dir.glob("checkpoint-*") if p.name[11:].isdigit())
    for _, ckpt in reversed(steps):
        try:  # written last: a checkpoint without a readable state was cut off mid-save
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(ckpt)
    return None


def train(trainer, stage: str, work_dir: Path, fingerprint: str) -> object:
    """trainer.train(), resumed from the last checkpoint of the same run when a kill left one."""
    checkpoint = resume_point(work_dir, fingerprint)
    if checkpoint:
        print(f"{stage}: resumed from {checkpoint}", flush=True)
    return trainer.train(resume_from_checkpoint=checkpoint)


def logged_rows(trainer, key: str) -> list[dict]:
    """The rows the trainer logged that hold `key` ({step, metric: value}); after a resume these include the
    rows logged before the kill (they are restored with the checkpoint's trainer state)."""
    return [{"step": row["step"], **{k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))}}
            for row in trainer.state.log_history if key in row]


def fingerprint(config, *inputs: Path) -> str:
    """What a checkpoint must match to be resumed: the stage's config and its inputs' files (name, size, mtime)."""
    files = []
    for root in inputs:
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        files += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()]
    return json.dumps([config.model_dump(mode="json"), files], sort_keys=True)
