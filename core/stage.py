"""The one entry point every stage's main() goes through: config, MLflow run, clean errors."""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Callable

from pydantic import BaseModel

from core import distributed, process, tracking
from core.config import load_section
from core.errors import LifecycleError

# set by the orchestrator while it checks out a stage that a worker ran: DVC should find the worker's run in its
# run cache; if it calls the command instead, the checkouts differ and running here (on the wrong machine) is wrong
RESTORE_ONLY_ENV = "LIFECYCLE_RESTORE_ONLY"


_STAGE_PID = os.getpid()


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM (a cancelled Prefect run, `kill`, a pod stopping) unwinds like an error: the MLflow run ends
    # FAILED and atomic writes delete their temporary folders
    if os.getpid() != _STAGE_PID:  # a forked worker (datatrove's pool, its manager) dies as its parent expects
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)


def stage_main(name: str, config_model: type[BaseModel], run: Callable[[BaseModel], dict]) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    global _STAGE_PID
    _STAGE_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
    process.die_with_parent()  # `dvc repro` (or the launcher of this rank) killed: stop here too
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if os.environ.get(RESTORE_ONLY_ENV) == name:
            raise LifecycleError("this stage ran on a worker, but DVC found no run of it with this checkout's code, "
                                 "data and params in the run cache pulled from the DVC remote; the worker's "
                                 "checkout differed (see the worker's log). Nothing was run here")
        config = load_section(name, config_model)
        processes = distributed.requested_processes(config)
        if processes > 1 and not distributed.launched():
            print(f"[{name}] launching {processes} processes with accelerate", flush=True)
            code = distributed.launch(name, processes)
            if code:
                print(f"error: [{name}] a rank failed (exit {code}); see its message above", file=sys.stderr)
            sys.exit(code)
        if not distributed.is_main():  # rank 0 alone opens the MLflow run and logs
            run(config)
            return
        with tracking.stage_run(name, config.model_dump(mode="json")):
            start = time.perf_counter()
            metrics = run(config)
            tracking.log_metrics(metrics)
            tracking.log_metrics({"stage_wall_time_s": time.perf_counter() - start})
            tracking.log_artifact(f"metrics/{name}.json", "metrics")
    except LifecycleError as exc:
        print(f"error: [{name}] {exc}", file=sys.stderr)
        sys.exit(2)
