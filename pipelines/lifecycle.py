"""The Prefect flow: one task per DVC stage, in dvc.yaml's order, under one MLflow parent run.

Each task runs `dvc repro --single-item <stage>`, so DVC decides whether the stage is stale and an
unchanged stage is skipped, not re-run. dvc.yaml is the one stage graph; this flow follows it.
Stages listed in params `orchestration.gpu_stages` run as a deployment on a GPU work pool (pipelines/remote.py).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, task
from pydantic import BaseModel, ConfigDict, field_validator

from core import tracking
from core.config import apply_overrides, load_section, params_path, read_params
from core.errors import ConfigError, InputError, LifecycleError
from core.formats import InputSpec, read_instructions
from core.io import write_json
from core.stage_host import SOCKET_ENV
from pipelines.graph import run_dvc_stage, stage_env, stage_names, stages_for
from pipelines.hub import refuse_hub_inputs
from pipelines.report import Bounds
from pipelines.servers import prefect_api_for_run, stage_host_for_run
from tasks import TaskConfig, check_fit, load_task

TIMINGS = Path("reports/timings.json")
LOCK = Path(".lifecycle.lock")


class Orchestration(BaseModel):
    """params.yaml `orchestration`: where stages run (docs/deployment.md)."""

    model_config = ConfigDict(extra="forbid")
    gpu_stages: list[str] = []
    gpu_deployment: str = "lifecycle-stage/gpu"
    retries: dict[str, int] = {}
    retry_delay_s: float = 30.0
    stage_host: bool = True

    @field_validator("retries")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"retries must be >= 0: {bad}")
        return value


def data_as_mappings(path: Path) -> list[str]:
    """A data input given as a bare path becomes {path: ...} in params.yaml: dvc.yaml tracks data.<input>.path."""
    data = read_params(path).get("data") or {}
    return [f"data.{name}={json.dumps({'path': value})}" for name, value in data.items() if isinstance(value, str)]


def preflight_task(params: dict, limit: int = 2000) -> None:
    """The task fits the instructions (a reference it can read in most records), checked on the raw input before
    any stage runs, so a task that cannot score these answers stops the run now, not after training."""
    spec = InputSpec.model_validate(params["data"]["instructions"])
    records = []
    try:
        for record in read_instructions(spec, on_problem=lambda _: None):
            records.append(record)
            if len(records) >= limit:
                break
    except InputError:
        return  # an unreadable input is the clean stage's to report, with every problem counted
    if records:
        check_fit(load_task(TaskConfig.model_validate(params.get("task") or {})), records, spec.path)


def validate_params(path: Path) -> dict:
    """Check every section against its stage's config before any stage runs."""
    params = read_params(path)
    refuse_hub_inputs(params.get("data") or {})
    names = stage_names()
    unknown = sorted(set(params) - set(names) - {"data", "task", "orchestration", "report"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; sections are 'data', 'task', 'orchestration', "
                          f"'report' and {names}")
    for name in names:
        load_section(name, importlib.import_module(f"stages.{name}").Config, path)
    orchestration = load_section("orchestration", Orchestration, path) if "orchestration" in params else Orchestration()
    if "clean" in orchestration.gpu_stages:
        raise ConfigError(f"{path}: orchestration.gpu_stages: clean runs where its inputs are (its outputs are "
                          "persistent, so DVC's run cache cannot carry it back from a worker)")
    load_section("task", TaskConfig, path)
    if "report" in params:
        load_section("report", Bounds, path)
    for key in ("gpu_stages", "retries"):
        strange = sorted(set(getattr(orchestration, key)) - set(names))
        if strange:
            raise ConfigError(f"{path}: orchestration.{key} names unknown stage(s) {strange}; stages are {names}")
    return params


@task(name="dvc-stage", retries=0)
def stage_task(name: str, env: dict, params: dict, parent_run_id: str) -> dict:
    orchestration = Orchestration(**params.get("orchestration") or {})
    if name in orchestration.gpu_stages:
        from pipelines import remote

        worker_env = {k: v for k, v in env.items() if k != SOCKET_ENV}  # this machine's stage host is not there
        return remote.dispatch(name, worker_env, params, orchestration.gpu_deployment, parent_run_id)
    return run_dvc_stage(name, env)


def stage_task_for(name: str, orchestration: Orchestration):
    """The stage's task with its retries (a retried training stage resumes from its last checkpoint)."""
    return stage_task.with_options(name=f"stage:{name}", retries=orchestration.retries.get(name, 0),
                                   retry_delay_seconds=orchestration.retry_delay_s)


_HELD: set[Path] = set()  # locks this process holds: the flow takes the lock `lifecycle run` took already


@contextlib.contextmanager
def exclusive(lock_path: Path = LOCK):
    """One pipeline run at a time per checkout: runs share params.yaml, dvc.lock and the outputs."""
    import fcntl

    key = lock_path.resolve()
    if key in _HELD:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise LifecycleError(f"another pipeline run holds {lock_path} ({holder}); wait for it to finish, "
                                 "or stop it (a killed run releases the lock)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fh.seek(0)
            fh.truncate()  # the lock itself goes with the file descriptor, also when the process is killed


@flow(name="lifecycle", log_prints=True)
def lifecycle(overrides: list[str] | None = None, targets: list[str] | None = None) -> dict:
    """The pipeline: every stage (or `targets` and what they depend on) under one MLflow parent run."""
    with exclusive():
        return _run(overrides, targets)


def prepare(overrides: list[str], targets: list[str]) -> tuple[dict, dict, list[str]]:
    """Everything a run checks before its first stage: the overrides written into params.yaml, every section valid,
    the sample data in place where it is used, the task fitting the instructions. Returns (the applied overrides,
    params, the stages to run). A refused run leaves params.yaml as it was."""
    path = params_path()
    original = path.read_bytes()
    try:
        applied = apply_overrides(path, overrides)
        apply_overrides(path, data_as_mappings(path))
        params = validate_params(path)
    except Exception:
        path.write_bytes(original)
        raise
    names = stages_for(targets, params)
    from pipelines import sample_data

    defaults = {k: str(sample_data.SAMPLE_DIR / f"{k}.jsonl") for k in ("general", "domain", "instructions",
                                                                         "preferences")}
    if any((params["data"].get(k) or {}).get("path") == v for k, v in defaults.items()):
        sample_data.ensure()
    if {"align", "evaluate"} & set(names):
        preflight_task(params)
    return applied, params, names


def _run(overrides: list[str] | None, targets: list[str] | None) -> dict:
    import mlflow

    start = time.perf_counter()
    applied, params, names = prepare(overrides or [], targets or [])
    orchestration = Orchestration(**params.get("orchestration") or {})
    exp_id = tracking.setup()
    tracking.end_orphaned_runs(exp_id)
    with mlflow.start_run(experiment_id=exp_id, run_name="lifecycle",
                          tags={"pipeline": "lifecycle", **tracking.owner_tags()}) as parent:
        mlflow.log_params(tracking.safe_params({"override": applied}) if applied else {"override": "none"})
        mlflow.log_params(tracking.safe_params(params))  # the whole params.yaml: `lifecycle compare` diffs it
        mlflow.set_tag("git_commit", _git_commit())
        if targets:
            mlflow.set_tag("targets", ",".join(targets))
        run_id = parent.info.run_id
        with stage_host_for_run(orchestration.stage_host):
            env = stage_env(run_id, tracking.tracking_uri())
            results = [stage_task_for(name, orchestration)(name, env, params, run_id) for name in names]
        flow_wall = time.perf_counter() - start
        timings = {"stages": results, "flow_wall_s": flow_wall,
                   "overhead_s": flow_wall - sum(r["wall_s"] for r in results), "overrides": applied,
                   "mlflow_parent_run_id": run_id}
        write_json(TIMINGS, timings)
        mlflow.log_metrics({"flow_wall_s": flow_wall, "flow_overhead_s": timings["overhead_s"],
                            **{f"wall_s.{r['stage']}": r["wall_s"] for r in results}})
        # every stage's metrics file, also for stages DVC skipped or restored from its run cache (those log no
        # child run): the parent run alone describes the pipeline's current outputs
        for name in stage_names():
            metrics_file = Path("metrics") / f"{name}.json"
            if metrics_file.exists():
                mlflow.log_metrics(tracking.numeric_metrics(json.loads(metrics_file.read_text()), name))
        from pipelines.report import write_report

        report = write_report()
        mlflow.log_artifact(str(report))
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=report.read_text(encoding="utf-8"), key="report-card",
                                 description="Lifecycle report card (reports/report.md)")
    return timings


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_pipeline(overrides: list[str] | None = None, targets: list[str] | None = None) -> dict:
    for required in (params_path(), Path("dvc.yaml")):  # before the flow starts a Prefect server
        if not required.is_file():
            raise ConfigError(f"{required} not found in {Path.cwd()}: run lifecycle from the project's root, the "
                              f"folder that holds dvc.yaml and params.yaml")
    # the lock and the checks first: a refused run answers at once and starts no Prefect server (the flow, which
    # deployments call directly, makes the same checks again: the overrides are in params.yaml by then)
    with exclusive():
        _, params, _ = prepare(overrides or [], targets or [])
        # the stage host imports while the Prefect server starts: both are ready by the first stage
        with stage_host_for_run(Orchestration(**params.get("orchestration") or {}).stage_host), prefect_api_for_run():
            return lifecycle(overrides=overrides or [], targets=targets or [])


if __name__ == "__main__":
    print(json.dumps(run_pipeline(sys.argv[1:]), indent=2))
