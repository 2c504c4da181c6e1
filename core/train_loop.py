"""The causal-LM loop shared by pretraining and domain continuation.

AdamW with decay/no-decay groups, linear warmup then cosine decay to a floor, gradient clipping,
periodic validation and checkpoints (safetensors model + optimizer/scheduler state).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from pydantic import Field
from tqdm import tqdm

from core import tracking
from core.config import StageConfig
from core.errors import LifecycleError
from core.lm import mean_nll


class TrainSettings(StageConfig):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(50, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="0: only the final model")


def lr_lambda(settings: TrainSettings) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        span = max(settings.steps - settings.warmup_steps, 1)
        progress = min((step - settings.warmup_steps) / span, 1.0)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def optimizer_for(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), eps=1e-8)


def train(model, next_batch: Callable[[torch.Generator], torch.Tensor], val_blocks: dict[str, torch.Tensor],
          settings: TrainSettings, seed: int, checkpoint_dir: Path | None = None, desc: str = "train") -> list[dict]:
    """Train in place; return the history rows ({step, loss, lr, grad_norm, val_<name>_loss ...})."""
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer_for(model, settings)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(settings))
    history: list[dict] = []
    tokens = 0
    start = time.perf_counter()

    def validate(step: int) -> dict:
        row = {"step": step}
        for name, blocks in val_blocks.items():
            row[f"val_{name}_loss"] = mean_nll(model, blocks)
        model.train()
        return row

    model.train()
    bar = tqdm(range(settings.steps), desc=desc, mininterval=2.0)
    running = 0.0
    for step in bar:
        x = next_batch(gen).to(model.device)
        loss = model(input_ids=x, labels=x).loss
        if not torch.isfinite(loss):
            raise LifecycleError(f"{desc}: loss is {loss.item()} at step {step}; lower the learning rate")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip).item()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()
        running += loss.item()
        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            n = done % settings.log_every or settings.log_every
            row = {"step": done, "loss": running / n, "lr": sched.get_last_lr()[0], "grad_norm": grad_norm,
                   "tokens_per_s": tokens / (time.perf_counter() - start)}
            running = 0.0
            history.append(row)
            tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, step=done)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if done % settings.eval_every == 0 or done == settings.steps:
            row = validate(done)
            history.append(row)
            tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, step=done)
        if checkpoint_dir and settings.checkpoint_every and done % settings.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, model, opt, sched, done)
    return history


def save_checkpoint(directory: Path, model, opt, sched, step: int) -> None:
    from core.io import atomic_dir

    with atomic_dir(directory / "last") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step},
                   tmp / "trainer_state.pt")
