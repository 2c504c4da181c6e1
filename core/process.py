"""Child processes that do not outlive their parent (Linux): a killed flow must not leave a stage training."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# `python -c ORPHAN_SAFE ARGS` runs `python ARGS` (e.g. `-m dvc repro`) so that it gets SIGTERM when the process
# that started it dies (set in the launcher, kept across exec; no preexec_fn in a process that has threads)
ORPHAN_SAFE = ("import os, sys; from core.process import die_with_parent; die_with_parent(); "
               "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (kept across exec). No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
