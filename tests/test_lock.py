"""One pipeline run per checkout: a second `lifecycle run` fails with a clear message; a killed run takes its
stage processes with it, releases the lock, its MLflow runs end FAILED at the next run, and that run resumes the
killed stage from its checkpoint."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from core.errors import LifecycleError
from pipelines.lifecycle import exclusive
from tests.micro import MICRO, copy_project, kill_at_checkpoint, lifecycle

HOLD = ("import sys, time; from pathlib import Path; from pipelines.lifecycle import exclusive\n"
        "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)")


def hold_lock(path, cwd):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=cwd, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(cwd)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_until_the_first_dies(tmp_path):
    from tests.micro import ROOT

    lock = tmp_path / ".lifecycle.lock"
    holder = hold_lock(lock, ROOT)
    try:
        with pytest.raises(LifecycleError, match=rf"another pipeline run holds {lock} \(pid {holder.pid} on "):
            with exclusive(lock):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder releases the lock with its file descriptor
        holder.wait()
    with exclusive(lock):
        assert f"pid {os.getpid()}" in lock.read_text()


def stage_processes(project, marks=("stages.", "core.stage_host")):
    """Stage processes in `project`: a fresh stage or the stage host's client ("stages.<name>" in its command
    line), the run's stage host and the stages it forked (theirs is the host's)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if proc.info["cwd"] == str(project) and any(mark in part for mark in marks
                                                        for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def prefect_servers(project):
    """The Prefect API servers a run in `project` started (their PREFECT_HOME is the project's)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "prefect.server" in " ".join(proc.info["cmdline"] or []) and \
                    (proc.info["environ"] or {}).get("PREFECT_HOME") == str(project / ".prefect"):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_a_run_killed_mid_training_stops_its_stages_and_the_next_run_resumes_with_dvc_clean(micro_run, tmp_path):
    """The path users take: `lifecycle run` (its own temporary Prefect server) killed while pretrain trains; the
    kill takes dvc, the stage and the Prefect server with it, the next `lifecycle run` resumes pretrain from its
    checkpoint and leaves DVC with nothing stale. In a copy of the session's micro run, made stale by a longer
    pretrain."""
    project = copy_project(micro_run.root, tmp_path / "project")
    sets = [a for s in [*MICRO, "pretrain.train.steps=200", "pretrain.train.eval_every=100"] for a in ("--set", s)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
           "PREFECT_HOME": str(project / ".prefect"), "LIFECYCLE_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--target", "pretrain", *sets],
                             cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 180
    while not stage_processes(project, marks=("stages.",)):
        assert first.poll() is None and time.monotonic() < deadline, "no stage started"
        time.sleep(0.2)
    # while it runs, a second run is refused and changes nothing. The stage is paused meanwhile: under load the
    # refused run's start-up outlasted the whole stage once, and the kill below then came after its outputs
    paused = stage_processes(project)
    for proc in paused:
        proc.suspend()
    try:
        second = lifecycle(project, "run", "--target", "pretrain", check=False, temporary_server=True)
    finally:
        for proc in paused:
            proc.resume()
    assert second.returncode == 2 and "another pipeline run holds" in second.stderr, second.stderr[-2000:]

    killed_at = kill_at_checkpoint(first, 2)  # the flow itself, at pretrain's first checkpoint
    deadline = time.monotonic() + 60
    while stage_processes(project) or prefect_servers(project):  # dvc, the stage and the run's Prefect server get
        assert time.monotonic() < deadline, (  # SIGTERM from the kernel when the flow dies
            [p.info["cmdline"] for p in stage_processes(project) + prefect_servers(project)])
        time.sleep(0.5)
    assert not (project / "metrics" / "pretrain.json").exists()

    resumed = lifecycle(project, "run", "--target", "pretrain", *sets)
    found = re.search(r"pretrain: resumed from \S+ at step (\d+)", resumed.stdout)
    assert found and killed_at <= int(found.group(1)) < 200, resumed.stdout[-3000:]
    assert json.loads((project / "metrics" / "pretrain.json").read_text())["train_tokens"] == 200 * 4 * 128
    assert not [p for p in project.rglob("*.tmp-*") if ".dvc" not in p.parts]  # no partial output left behind
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", "pretrain"], cwd=project, env=env,
                            capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout  # nothing stale
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("lifecycle").experiment_id],
                              order_by=["start_time ASC"])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if r.data.tags.get("pipeline") == "lifecycle"]
    # the copied micro run's, the killed flow's (ended by the next run), the next run's
    assert [r.info.status for r in parents] == ["FINISHED", "FAILED", "FINISHED"]
