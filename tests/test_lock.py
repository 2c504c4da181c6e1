"""One pipeline run per checkout: a second `lifecycle run` fails with a clear message; a killed run takes its
stage processes with it, releases the lock, and its MLflow runs end FAILED at the next run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from core.errors import LifecycleError
from pipelines.lifecycle import exclusive
from tests.micro import MICRO, lifecycle, make_project

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


def stage_processes(project):
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if proc.info["cwd"] == str(project) and any("stages." in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_a_killed_run_leaves_no_stage_running_and_the_next_run_completes(tmp_path):
    project = make_project(tmp_path / "project")
    sets = [a for s in MICRO for a in ("--set", s)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
           "PREFECT_HOME": str(project / ".prefect"), "LIFECYCLE_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--target", "tokenizer", *sets],
                             cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not stage_processes(project):
        assert first.poll() is None and time.monotonic() < deadline, "no stage started"
        time.sleep(0.2)
    # while it runs, a second run is refused and changes nothing
    second = lifecycle(project, "run", "--target", "tokenizer", check=False)
    assert second.returncode == 2 and "another pipeline run holds" in second.stderr, second.stderr[-2000:]

    first.send_signal(signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 60
    while stage_processes(project):  # dvc gets SIGTERM from the kernel, the stage from dvc's death
        assert time.monotonic() < deadline, [p.info["cmdline"] for p in stage_processes(project)]
        time.sleep(0.5)

    lifecycle(project, "run", "--target", "tokenizer", *sets)
    assert (project / "artifacts" / "tokenizer" / "tokenizer.json").exists()
    assert not [p for p in project.rglob("*.tmp-*") if ".dvc" not in p.parts]  # no partial output left behind
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("lifecycle").experiment_id],
                              order_by=["start_time ASC"])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if r.data.tags.get("pipeline") == "lifecycle"]
    assert [r.info.status for r in parents] == ["FAILED", "FINISHED"]  # the killed flow's run, ended by the next
