"""Device, seeding and threads: one place so every stage behaves the same on CPU and GPU."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def setup(seed: int) -> torch.device:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("LIFECYCLE_THREADS", os.cpu_count() or 1)))
    return device()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
