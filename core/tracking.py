"""MLflow logging: one child run per stage under the pipeline's parent run.

The flow exports LIFECYCLE_PARENT_RUN_ID; a stage run by `dvc repro` alone logs a top-level run
tagged with its stage. The default store is SQLite under mlflow/ (no server needed).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Iterator

EXPERIMENT = "lifecycle"
PARENT_ENV = "LIFECYCLE_PARENT_RUN_ID"
WALL_CLOCK = {"tokens_per_s", "mfu", "step_time", "train_runtime", "train_samples_per_second",
              "train_steps_per_second"}  # measured, not computed: never in DVC-tracked outputs
HOST_TAG, PID_TAG = "lifecycle.host", "lifecycle.pid"  # who holds a RUNNING run (orphans are found by these)
# a key named like a credential (HF_TOKEN, api_key, db_password, ...); a whole word, so max_new_tokens is not one
SECRET_KEY = re.compile(r"(^|[._-])(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|(API|ACCESS|SECRET|PRIVATE)[._-]?KEY)($|[._-])",
                        re.I)


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = (root or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def setup(root: Path | None = None) -> str:
    """Point MLflow at the project's store and return the experiment id."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    root = (root or Path.cwd()).resolve()
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    artifacts = (root / "mlflow" / "artifacts").as_uri() if uri.startswith("sqlite") else None
    try:
        return mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    except Exception:  # created concurrently by another process
        return mlflow.get_experiment_by_name(EXPERIMENT).experiment_id


def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def numeric_metrics(values: dict, prefix: str = "") -> dict[str, float]:
    """The numbers (bools as 0/1) in a nested metrics dict, flattened to dotted keys."""
    return {k: float(v) for k, v in flatten(values, prefix).items()
            if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


def safe_params(params: dict[str, object]) -> dict[str, str]:
    """Params as MLflow strings, with anything that looks like a secret withheld."""
    out = {}
    for k, v in flatten(params).items():
        out[k] = "***" if SECRET_KEY.search(k.rsplit(".", 1)[-1]) else str(v)[:5000]
    return out


@contextlib.contextmanager
def stage_run(stage: str, params: dict) -> Iterator[object]:
    """Open the stage's MLflow run (a child of the flow's run when there is one)."""
    import mlflow

    exp_id = setup()
    parent = os.environ.get(PARENT_ENV) or None
    end_orphaned_runs(exp_id)
    tags = {"stage": stage, "mlflow.runName": stage, **owner_tags()}
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent, tags=tags,
                          nested=parent is not None) as run:
        mlflow.log_params(safe_params({stage: params}))
        yield run


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphaned_runs(experiment_id: str) -> list[str]:
    """End as FAILED the runs this machine left RUNNING when a process died without closing them (SIGKILL,
    out of memory, power loss). An exception or SIGTERM closes a run as FAILED on its own (core.stage)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    host, ended = socket.gethostname(), []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500):
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == host and pid.isdigit() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "lifecycle.ended", f"process {pid} died without ending the run")
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
    return ended


def active() -> bool:
    if "mlflow" not in sys.modules:  # nobody started a run; importing mlflow just to ask costs a second
        return False
    import mlflow

    return mlflow.active_run() is not None


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if not active():
        return
    import mlflow

    flat = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if flat:
        mlflow.log_metrics(flat, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if not active() or not Path(path).exists():
        return
    import mlflow

    if Path(path).is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)


def save_curves(history: list[dict], title: str, out_png: Path, keys: list[str], out_json: Path) -> None:
    """Write the rows of the main curve (keys[0]) for DVC plots, draw all the curves as a PNG and attach it
    to the stage's MLflow run. Throughput (wall-clock) columns stay in MLflow: DVC outputs are the same bytes
    on every run."""
    write_history(out_json, [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in history
                             if keys[0] in row])
    if history:
        plot_history(history, title, out_png, keys)
        log_artifact(out_png, "plots")


def save_figure(fig, out_png: Path) -> None:
    """Write the figure atomically (a temporary file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name("." + out_png.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out_png)


def plot_history(history: list[dict], title: str, out_png: Path, keys: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or sorted({k for row in history for k in row if k != "step"})
    keys = [k for k in keys if any(k in row for row in history)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(row["step"], row[key]) for row in history if key in row]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out_png)


def plot_against(history: list[dict], x: str, ys: list[str], title: str, out_png: Path) -> None:
    """Curves of `ys` against `x` (not the step) on one axis, e.g. proxy and gold reward against KL; attached to
    the stage's MLflow run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ys:
        pts = sorted((row[x], row[key]) for row in history if x in row and key in row)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
    ax.set_xlabel(x)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png)
    log_artifact(out_png, "plots")


def write_history(path: Path, history: list[dict]) -> None:
    """DVC plots read this JSON list of {step, ...} rows."""
    from core.io import atomic_file

    with atomic_file(path) as fh:
        json.dump(history, fh, indent=1)
