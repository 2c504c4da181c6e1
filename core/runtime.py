"""Device, seeding and threads: one place so every stage behaves the same on CPU and GPU, on one process or many."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from core import distributed


def setup(seed: int) -> torch.device:
    distributed.init()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():  # ranks on one machine share its cores
        cores = max(1, (os.cpu_count() or 1) // distributed.world_size())
        torch.set_num_threads(int(os.environ.get("LIFECYCLE_THREADS", cores)))
    return device()


def device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
