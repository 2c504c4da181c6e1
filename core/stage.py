"""The one entry point every stage's main() goes through: config, MLflow run, clean errors."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable

from pydantic import BaseModel

from core import distributed, tracking
from core.config import load_section
from core.errors import LifecycleError


def stage_main(name: str, config_model: type[BaseModel], run: Callable[[BaseModel], dict]) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
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
