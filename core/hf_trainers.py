"""Glue for transformers/TRL trainers: device-aware common arguments and a metrics-history callback."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from core import tracking
from core.errors import LifecycleError


def common_args(output_dir: Path, seed: int, steps: int, batch_size: int, lr: float, warmup_ratio: float,
                log_every: int) -> dict:
    """Arguments every TRL config in the project shares. bf16 only on a GPU that supports it."""
    gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max(1, int(warmup_ratio * steps)),
        logging_steps=log_every, save_strategy="no", report_to="none", use_cpu=not gpu,
        bf16=gpu and torch.cuda.is_bf16_supported(), dataloader_num_workers=0, disable_tqdm=False,
        max_grad_norm=1.0,
    )


class HistoryCallback(TrainerCallback):
    """Keeps every logged row (for plots) and forwards it to the stage's MLflow run."""

    def __init__(self, stage: str):
        self.stage = stage
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        loss = logs.get("loss")
        if loss is not None and not torch.isfinite(torch.tensor(loss)):
            raise LifecycleError(f"{self.stage}: loss is {loss} at step {state.global_step}; lower the learning rate")
        if logs:
            self.history.append({"step": state.global_step, **logs})
            tracking.log_metrics({k.replace("/", "_"): v for k, v in logs.items()}, step=state.global_step)
