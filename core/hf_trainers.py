"""Glue for transformers/TRL/PEFT: the logging callback, resumable training, TRL's preference rows and the model
folder every TRL stage ends with (their settings, with TRL's arguments, are core.settings')."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from core import tracking
from core.errors import LifecycleError
from core.io import atomic_dir

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
