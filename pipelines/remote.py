"""Stages that run on another machine: a Prefect deployment (`lifecycle-stage`) on a GPU work pool.

The orchestrator (the lifecycle flow) pushes the stage's inputs to the DVC remote and calls the deployment
with its params.yaml, dvc.lock and git commit. The worker, in its own clone at that commit, runs
`dvc repro --pull` (DVC fetches the missing inputs) and `dvc push --run-cache` (the outputs and the record
of the run). Back on the orchestrator, `dvc repro --pull` finds that run in the run cache and checks its
outputs out without running anything: the orchestrator's dvc.lock stays the record, written by DVC itself.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from prefect import flow

from core.errors import LifecycleError
from core.io import atomic_file
from core.stage import RESTORE_ONLY_ENV
from pipelines import graph


def default_remote(cwd: Path | None = None) -> str:
    name = graph.dvc_quiet(["remote", "default"], cwd)
    if not name:
        raise LifecycleError("stages on a worker need a default DVC remote to exchange data: "
                         "`dvc remote add -d storage s3://bucket/path` (docs/deployment.md)")
    return name


def check_shippable(name: str, params: dict) -> str:
    """The commit a worker checks out; an error if a dependency of `name` would differ on the worker."""
    commit = graph.git("rev-parse", "HEAD")
    specs = graph.stage_specs()
    produced = [o for other in specs for o in graph.stage_outs(other, specs)]
    for dep in graph.stage_deps(name, params, specs):
        if any(graph._overlaps(dep, o) for o in produced):
            continue  # another stage's output: the worker pulls it from the DVC remote
        if Path(dep + ".dvc").exists():
            continue  # `dvc add`ed data: pulled from the remote too
        if graph.git("ls-files", "--", dep) == "":
            raise LifecycleError(f"stage '{name}' runs on a worker, but its dependency {dep} is neither committed to "
                                 "git nor tracked by DVC (`dvc add` it and push)")
        if graph.git("status", "--porcelain", "--", dep):
            raise LifecycleError(f"stage '{name}' runs on a worker from commit {commit[:12]}, but {dep} has "
                                 "uncommitted changes: commit (and push) them first")
    return commit


def ship_inputs(name: str, env: dict, params: dict) -> str:
    """Push what stage `name` reads to the DVC remote; the commit the worker must check out."""
    default_remote()
    commit = check_shippable(name, params)
    tracked = graph.git("ls-files", "--", "*.dvc").split()  # `dvc add`ed data
    inputs = graph.upstream(name, params) + tracked
    if inputs:
        graph.dvc(["push", *inputs], env, f"pushing the inputs of '{name}' to the DVC remote")
    return commit


def check_out_run(name: str, env: dict) -> dict:
    """Check out the outputs of the run a worker pushed; DVC writes dvc.lock. Never runs the stage here."""
    return graph.run_dvc_stage(name, {**env, RESTORE_ONLY_ENV: name}, pull=True)


def dispatch(name: str, env: dict, params: dict, deployment: str, parent_run_id: str) -> dict:
    """Run stage `name` as `deployment` and check its outputs out here (called inside the lifecycle flow)."""
    from prefect.deployments import run_deployment

    start = time.perf_counter()
    commit = ship_inputs(name, env, params)
    print(f"stage '{name}': running as deployment {deployment}", flush=True)
    flow_run = run_deployment(deployment, timeout=None, poll_interval=2, parameters={
        "stage": name, "params_yaml": Path("params.yaml").read_text(encoding="utf-8"),
        "dvc_lock": Path("dvc.lock").read_text(encoding="utf-8") if Path("dvc.lock").exists() else "",
        "git_commit": commit, "parent_run_id": parent_run_id, "tracking_uri": env["MLFLOW_TRACKING_URI"]})
    state = flow_run.state
    if state is None or not state.is_completed():
        raise LifecycleError(f"stage '{name}' failed on the worker (deployment {deployment}, flow run {flow_run.id}): "
                             f"{state.name if state else 'no state'}: {state.message if state else ''}")
    restored = check_out_run(name, env)
    return {"stage": name, "status": "remote", "wall_s": time.perf_counter() - start,
            "check_out_wall_s": restored["wall_s"], "flow_run_id": str(flow_run.id)}


def push_uncached_outputs(stage: str) -> None:
    """Push the objects of the stage's `cache: false` outputs (metrics, plots) that its run record points at.

    DVC keeps them in the cache for the run cache, but `dvc push --run-cache` (3.67) sends only the records;
    without the objects the orchestrator cannot check the run out.
    """
    from dvc.repo import Repo

    with Repo(".") as repo:
        stage_obj = repo.stage.collect(stage)[0]
        entry = repo.stage_cache._load(stage_obj)  # noqa: SLF001 (no public API reads a run record)
        if not entry:
            raise LifecycleError(f"stage '{stage}': DVC saved no run record (is an output marked persist?)")
        recorded = repo.stage_cache._create_stage(entry, wdir=stage_obj.wdir)  # noqa: SLF001
        for odb, objs in recorded.get_used_objs().items():
            result = repo.cloud.push(objs, odb=odb)
            if result.failed:
                raise LifecycleError(f"stage '{stage}': could not push {sorted(h.obj_name for h in result.failed)}")


def execute_stage(stage: str, params_yaml: str, dvc_lock: str, git_commit: str, parent_run_id: str,
                  tracking_uri: str) -> dict:
    """The worker's side, in a clone of the project: the orchestrator's commit, params and lock; repro; push."""
    start = time.perf_counter()
    head = graph.git("rev-parse", "HEAD")
    if head != git_commit:
        try:
            graph.git("fetch", "--quiet", "origin", git_commit)
        except LifecycleError:
            pass  # a local clone may hold the commit already
        try:
            graph.git("checkout", "--quiet", "--detach", git_commit)
        except LifecycleError as exc:
            raise LifecycleError(f"worker clone {Path.cwd()} is at {head[:12]} and cannot check out the "
                                 f"orchestrator's commit {git_commit[:12]} (was it pushed?): {exc}") from exc
    default_remote()
    for path, text in (("params.yaml", params_yaml), ("dvc.lock", dvc_lock)):
        if text:
            with atomic_file(path) as fh:
                fh.write(text)
    env = graph.stage_env(parent_run_id, tracking_uri)
    result = graph.run_dvc_stage(stage, env, pull=True)
    graph.dvc(["push", "--run-cache", stage], env, f"pushing the outputs of '{stage}' to the DVC remote")
    push_uncached_outputs(stage)
    return {**result, "worker": socket.gethostname(), "worker_dir": str(Path.cwd()), "commit": git_commit,
            "worker_wall_s": time.perf_counter() - start}


@flow(name="lifecycle-stage", log_prints=True)
def stage_flow(stage: str, params_yaml: str, dvc_lock: str, git_commit: str, parent_run_id: str,
               tracking_uri: str) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return execute_stage(stage, params_yaml, dvc_lock, git_commit, parent_run_id, tracking_uri)
