"""`lifecycle compare`: recent pipeline runs side by side from MLflow, the params that differ and the headline metrics.

Each flow run is an MLflow parent run (tag pipeline=lifecycle) that logs the whole params.yaml as params and every
stage's metrics file as `<stage>.<metric>`, including stages DVC skipped or restored from its run cache (those log
no child run), so a parent run alone describes what that pipeline run produced.
"""
from __future__ import annotations

import datetime

from core import tracking
from core.errors import ConfigError

HEADLINE = [  # (metric, column)
    ("evaluate.sft.task_accuracy", "sft acc"),
    ("evaluate.aligned.task_accuracy", "aligned acc"),
    ("evaluate.sft.chrf", "sft chrF"),  # a free-form task's primary metric (task accuracy is left blank)
    ("evaluate.aligned.chrf", "aligned chrF"),
    ("evaluate.aligned.reward_score", "aligned reward"),
    ("evaluate.aligned.win_rate_vs_sft", "win rate"),
    ("evaluate.aligned.kl_to_sft", "KL"),
    ("evaluate.aligned.bpb_general", "bpb general"),
    ("reward.accuracy", "RM acc"),
    ("promote.promoted", "champion"),
]


def pipeline_runs(last: int, run_ids: list[str] | None = None) -> list[dict]:
    """The `last` most recent finished flow runs, oldest first, or the runs named by `run_ids` (full ids or the
    8-character prefixes the table shows), in that order; each with its params and headline metrics."""
    import mlflow

    exp_id = tracking.setup()
    finished = "tags.pipeline = 'lifecycle' and attributes.status = 'FINISHED'"
    if run_ids:
        parents = mlflow.search_runs(experiment_ids=[exp_id], output_format="list", filter_string=finished)
        chosen = []
        for wanted in run_ids:
            found = [p for p in parents if p.info.run_id.startswith(wanted)]
            if not found:
                raise ConfigError(f"compare: no finished pipeline run {wanted!r} in MLflow (`lifecycle compare "
                                  "--last N` lists them)")
            if len(found) > 1:
                raise ConfigError(f"compare: {wanted!r} names {len(found)} finished pipeline runs (give a longer "
                                  "prefix of a run id from `lifecycle compare --last N`)")
            chosen += found
    else:
        chosen = list(reversed(mlflow.search_runs(experiment_ids=[exp_id], output_format="list", max_results=last,
                                                  order_by=["attributes.start_time DESC"], filter_string=finished)))
    return [{"run_id": p.info.run_id, "start_time": p.info.start_time,
             "params": {k: v for k, v in p.data.params.items() if not k.startswith("override")},
             "metrics": {col: p.data.metrics.get(key) for key, col in HEADLINE}} for p in chosen]


def differing_params(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]


def render(rows: list[dict]) -> str:
    if not rows:
        return "no finished pipeline runs in MLflow yet (run `lifecycle run` first)\n"
    diff = differing_params(rows)
    columns = ["run", "started", *diff, *(col for _, col in HEADLINE)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        started = datetime.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%Y-%m-%d %H:%M")
        metrics = ["" if v is None else f"{v:.4g}" for v in r["metrics"].values()]
        lines.append("| " + " | ".join([r["run_id"][:8], started, *(r["params"].get(k, "") for k in diff), *metrics])
                     + " |")
    note = (f"{len(diff)} param(s) differ" if diff else "no params differ") + f" across these {len(rows)} runs."
    return "\n".join(lines) + "\n\n" + note + "\n"
