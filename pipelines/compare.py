"""`lifecycle compare`: recent pipeline runs side by side from MLflow, the params that differ and the headline metrics.

Each flow run is an MLflow parent run (tag pipeline=lifecycle); its stages are child runs whose params are the
stage's params.yaml section, prefixed with the section name. A stage DVC skipped logs no child run, so a run's
params are those of the stages it ran, completed with the latest earlier value (what that run actually used).
"""
from __future__ import annotations

from core import tracking

HEADLINE = [  # (stage, metric, column)
    ("evaluate", "sft.task_accuracy", "sft acc"),
    ("evaluate", "aligned.task_accuracy", "aligned acc"),
    ("evaluate", "aligned.reward_score", "aligned reward"),
    ("evaluate", "aligned.win_rate_vs_sft", "win rate"),
    ("evaluate", "aligned.kl_to_sft", "KL"),
    ("evaluate", "aligned.bpb_general", "bpb general"),
    ("reward", "accuracy", "RM acc"),
    ("promote", "promoted", "champion"),
]


def pipeline_runs(last: int) -> list[dict]:
    """The `last` most recent finished flow runs, oldest first, each with merged params and headline metrics."""
    import mlflow

    exp_id = tracking.setup()
    parents = mlflow.search_runs(experiment_ids=[exp_id], output_format="list", order_by=["attributes.start_time DESC"],
                                 filter_string="tags.pipeline = 'lifecycle' and attributes.status = 'FINISHED'")
    parents = list(reversed(parents[:last]))
    if not parents:
        return []
    children = mlflow.search_runs(experiment_ids=[exp_id], output_format="list",
                                  filter_string="tags.stage != ''", order_by=["attributes.start_time ASC"])
    by_parent: dict[str, list] = {}
    for run in children:
        by_parent.setdefault(run.data.tags.get("mlflow.parentRunId", ""), []).append(run)
    # a skipped stage keeps the params and metrics of the run that last ran it
    earlier = mlflow.search_runs(experiment_ids=[exp_id], output_format="list", order_by=["attributes.start_time ASC"],
                                 filter_string="tags.pipeline = 'lifecycle' and attributes.status = 'FINISHED'")
    carried_params: dict[str, str] = {}
    carried_metrics: dict[tuple[str, str], float] = {}
    wanted = {p.info.run_id for p in parents}
    rows = []
    for parent in earlier:
        for child in by_parent.get(parent.info.run_id, []):
            stage = child.data.tags["stage"]
            carried_params.update(child.data.params)
            carried_metrics.update({(stage, k): v for k, v in child.data.metrics.items()})
        if parent.info.run_id in wanted:
            rows.append({"run_id": parent.info.run_id, "start_time": parent.info.start_time,
                         "params": dict(carried_params),
                         "metrics": {col: carried_metrics.get((stage, key)) for stage, key, col in HEADLINE}})
    return rows


def differing_params(rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]


def render(rows: list[dict]) -> str:
    import datetime

    if not rows:
        return "no finished pipeline runs in MLflow yet (run `lifecycle run` first)\n"
    diff = differing_params(rows)
    columns = ["run", "started", *diff, *(col for _, _, col in HEADLINE)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        started = datetime.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%Y-%m-%d %H:%M")
        metrics = ["" if v is None else f"{v:.4g}" for v in r["metrics"].values()]
        lines.append("| " + " | ".join([r["run_id"][:8], started, *(r["params"].get(k, "") for k in diff), *metrics])
                     + " |")
    note = (f"{len(diff)} param(s) differ" if diff else "no params differ") + f" across these {len(rows)} runs."
    return "\n".join(lines) + "\n\n" + note + "\n"
