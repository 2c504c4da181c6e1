"""Running datatrove passes and reading their stats: the one place that touches datatrove's executors, its task
logger and its stats files.

`Runner` runs a pass on the configured executor (local processes, Ray or Slurm), fails when any task failed (with
the end of its log), and sums the per-task stats; `corpus_metrics` turns those stats into the stage's metrics
(documents in and out, drops per filter and reason, duplicates, PII, the split).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import datatrove.executor.base
from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from loguru import logger

from core.cleaning.quality import SanityFilter
from core.cleaning.settings import ExecutorConfig
from core.cleaning.steps import BoilerplateLines, LanguageFilter, Normalize, RedactPII, SplitWriter
from core.errors import LifecycleError
from core.readers import CorpusReader


def _no_tracebacks(record) -> bool:
    # a failing task is reported once, by the stage (with the end of its log); its traceback stays in that log
    return record["exception"] is None


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's add_task_logger, quieter: the task log file gets everything, the console warnings only
    (datatrove's own puts every task's INFO lines and error tracebacks on the console)."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
    logger.add(sys.stderr, level="WARNING", format=fmt, filter=_no_tracebacks)
    logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
    return logfile


class Runner:
    """Runs datatrove passes on the configured executor and gathers their stats."""

    def __init__(self, cfg: ExecutorConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.workers = cfg.workers or os.cpu_count() or 1
        # datatrove's per-task logs stay in the work folder; the console gets one line per pass
        logger.remove()
        logger.add(sys.stderr, level="WARNING", filter=_no_tracebacks)

    def __call__(self, name: str, pipeline: list, tasks: int) -> dict:
        start = time.perf_counter()
        # datatrove's executors look up add_task_logger in their module at each task: swapped in for this pass
        # only (forked local workers inherit it; Ray and Slurm workers keep datatrove's own)
        original, datatrove.executor.base.add_task_logger = datatrove.executor.base.add_task_logger, _task_logger
        try:
            stats = self._run(name, pipeline, tasks)
        finally:
            datatrove.executor.base.add_task_logger = original
        print(f"clean: {name:<24} {tasks:>3} task(s) {time.perf_counter() - start:7.1f} s", flush=True)
        return stats

    def _run(self, name: str, pipeline: list, tasks: int) -> dict:
        logs = self.work / "logs" / name
        if self.cfg.type == "local":
            from datatrove.executor import LocalPipelineExecutor

            executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(self.workers, tasks),
                                             logging_dir=str(logs), skip_completed=False, start_method="fork")
            executor.run()
        elif self.cfg.type == "ray":
            from datatrove.executor import RayPipelineExecutor

            RayPipelineExecutor(pipeline, tasks=tasks, workers=self.workers, logging_dir=str(logs),
                                skip_completed=False, **self.cfg.options).run()
        else:  # slurm: submit, then wait for every task's completion marker
            from datatrove.executor import SlurmPipelineExecutor

            SlurmPipelineExecutor(pipeline, tasks=tasks, workers=self.workers, logging_dir=str(logs),
                                  skip_completed=False, job_name=f"clean-{name}", **self.cfg.options).run()
            while len(list((logs / "completions").glob("*"))) < tasks:
                time.sleep(10)
        done = {p.name for p in (logs / "completions").glob("*")}
        failed = [rank for rank in range(tasks) if f"{rank:05d}" not in done]
        if failed:  # datatrove logs a failed task and carries on; a partial pass must not pass
            log = logs / "logs" / f"task_{failed[0]:05d}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:]) if log.exists() else "(no log)"
            raise LifecycleError(f"pass {name}: {len(failed)} of {tasks} datatrove task(s) failed; "
                                 f"task {failed[0]}'s log ends:\n{tail}")
        return gather_stats(logs, pipeline)


# the metrics' name of each step whose stats they read, by its class (subclasses included: the fast filters)
STAT_KEYS = [(CorpusReader, "reader"), (Normalize, "normalize"), (BoilerplateLines, "boilerplate"),
             (LanguageFilter, "language"), (SanityFilter, "sanity"), (GopherRepetitionFilter, "gopher_repetition"),
             (GopherQualityFilter, "gopher_quality"), (C4QualityFilter, "c4"), (FineWebQualityFilter, "fineweb"),
             (RedactPII, "pii"), (ExactDedupFilter, "exact_dedup"), (MinhashDedupCluster, "minhash_cluster"),
             (MinhashDedupFilter, "near_dedup"), (SplitWriter, "split")]


def stat_key(step: object) -> str | None:
    return next((key for cls, key in STAT_KEYS if isinstance(step, cls)), None)


def gather_stats(logs: Path, pipeline: list) -> dict[str, Counter]:
    """{stat key of a step: Counter of its stats, summed over tasks} from datatrove's per-task stats files, which
    hold one entry per pipeline step in the pipeline's order."""
    keys = [stat_key(step) for step in pipeline if hasattr(step, "stats")]
    out: dict[str, Counter] = {}
    for path in sorted((logs / "stats").glob("*.json")):
        entries = json.loads(path.read_text())
        if len(entries) != len(keys):
            raise LifecycleError(f"{path}: stats of {len(entries)} steps for a pipeline of {len(keys)}")
        for key, entry in zip(keys, entries):
            if key is None:
                continue
            counter = out.setdefault(key, Counter())
            for name, value in entry.get("stats", {}).items():
                counter[name] += value["total"] if isinstance(value, dict) else value
    return out


def corpus_metrics(steps: dict[str, Counter], problems: list[dict]) -> dict:
    """Docs and bytes in and out, drops per filter and reason, dedup clusters, input problems."""
    dropped: dict[str, dict[str, int]] = {}
    for key, counter in steps.items():
        reasons = {k.removeprefix("dropped_"): int(v) for k, v in counter.items() if k.startswith("dropped_")}
        if not reasons and counter.get("dropped"):
            reasons = {"duplicate": int(counter["dropped"])}
        if reasons:
            dropped[key] = dict(sorted(reasons.items()))
    get = lambda key, stat: int(steps.get(key, Counter()).get(stat, 0))  # noqa: E731
    return {
        "docs_in": get("reader", "documents_read"),
        "bytes_in": get("reader", "bytes_read"),
        "input_problems": dict(sorted(Counter(p["kind"] for p in problems).items())),
        "dropped": dropped,
        "dropped_total": sum(sum(r.values()) for r in dropped.values()),
        # each filter's share of the documents read: what the drop guard compares with max_drop_fraction
        "drop_share": {k: round(sum(r.values()) / max(get("reader", "documents_read"), 1), 4)
                       for k, r in dropped.items()},
        "exact_duplicates": get("exact_dedup", "dropped"),
        "near_duplicate_clusters": get("minhash_cluster", "clusters"),
        "near_duplicates": get("near_dedup", "dropped"),
        "pii_docs": get("pii", "docs_with_pii"),
        "pii_redactions": get("pii", "redactions"),
        "train": get("split", "train"),
        "heldout": get("split", "heldout"),
        "bytes_out": get("split", "bytes_out"),
    }
