"""One training stage over several processes: `accelerate launch` starts them, torch's DDP or FSDP2 trains.

A stage whose params ask for `train.processes > 1` relaunches itself under `accelerate launch` (torchrun
underneath): one process per GPU, or CPU processes talking over gloo. Every rank runs the whole stage on its
share of each batch; the global batch, and so the learning rate, is the same for any number of processes.
Rank 0 alone writes outputs and logs to MLflow; the pipeline's parent run id reaches it through the environment.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import Iterator

import torch

from core.process import die_with_parent
from core.settings import Strategy


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a process started by a launcher (torchrun sets these for every rank)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def requested_processes(config) -> int:
    return int(getattr(getattr(config, "train", None), "processes", 1) or 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stage: str, processes: int) -> int:
    """Run `python -m stages.<stage>` as `processes` ranks under `accelerate launch`; return its exit code."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), "-m", f"stages.{stage}"]
    # killing the stage kills the launcher and so every rank: none keeps training, or writes outputs, as an orphan
    return subprocess.call(cmd, preexec_fn=lambda: die_with_parent(signal.SIGKILL))


def init() -> None:
    """Join the process group when launched with more than one rank (NCCL on GPUs, gloo on CPU)."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        die_with_parent()
        PartialState()


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_mean(value: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= world_size()
    return value


def all_sum(values: list[float], device: torch.device) -> list[float]:
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def wrap(model, strategy: Strategy):
    """The model as it is trained: itself on one process, DDP or FSDP2 (one shard group per decoder layer,
    as named by the model's `_no_split_modules`) on several. FSDP2 shards `model` in place."""
    if world_size() == 1:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[model.device.index] if model.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module)
    fully_shard(model)
    return model


@contextlib.contextmanager
def grad_sync(wrapped, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation step."""
    if enabled or world_size() == 1:
        yield
    elif hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
    else:  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)


def local_value(t) -> float:
    """A reduced scalar as a float (FSDP2 returns DTensors)."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=world_size() > 1, **kw)


def full_state_dict(model) -> dict:
    """The whole model's weights, gathered on rank 0 (all ranks must call this)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optimizer_state(model, opt) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=_options())


def load_full_state(model, opt, weights: dict, optimizer_state: dict):
    """Load full (unsharded) model and optimizer state into a plain, DDP or FSDP2 model on every rank;
    return the model's incompatible keys."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)
    result = set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, opt, optimizer_state, options=options)
    return result
