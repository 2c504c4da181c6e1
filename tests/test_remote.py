"""A stage run "remotely": a second clone pulls its inputs from a local DVC remote, runs it, pushes its outputs;
the orchestrator checks the run out and DVC sees the stage as up to date there."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.micro import MICRO, lifecycle, make_project

PY = sys.executable


def dvc(cwd, *args, env=None, check=True):
    proc = subprocess.run([PY, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)}: {proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def in_project(cwd, code: str, check=True) -> subprocess.CompletedProcess:
    """Python run inside `cwd`, importing that checkout's code (as a worker or the orchestrator would)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=os.path.dirname(PY) + os.pathsep + env.get("PATH", ""), LIFECYCLE_THREADS="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/m.db")
    proc = subprocess.run([PY, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    project = make_project(root / "project")
    (root / "store").mkdir()
    dvc(project, "remote", "add", "-d", "store", str(root / "store"))
    lifecycle(project, "run", "--target", "tokenizer", *[a for s in MICRO for a in ("--set", s)])
    git(project, "add", "-A")
    git(project, "commit", "-qm", "micro project")
    return project


SHIP = ("import json; from pathlib import Path; from core.config import read_params; from pipelines import remote, graph;"
        "env = graph.stage_env('', 'sqlite:///' + str(Path('m.db').resolve()));"
        "print(json.dumps({'commit': remote.ship_inputs('pretrain', env, read_params())}))")


def test_worker_clone_runs_the_stage_and_the_orchestrator_checks_it_out_without_running(orchestrator, tmp_path):
    commit = json.loads(in_project(orchestrator, SHIP).stdout.splitlines()[-1])["commit"]
    worker = tmp_path / "worker"
    git(tmp_path, "clone", "-q", str(orchestrator), str(worker))
    assert not (worker / "data" / "clean").exists()  # DVC outputs are not in git: the worker must pull them
    code = ("import json; from pathlib import Path; from pipelines.remote import execute_stage;"
            f"p = Path({str(orchestrator)!r});"
            f"print(json.dumps(execute_stage('pretrain', (p / 'params.yaml').read_text(), (p / 'dvc.lock').read_text(),"
            f" {commit!r}, '', 'sqlite:///' + str(Path('m.db').resolve()))))")
    result = json.loads(in_project(worker, code).stdout.splitlines()[-1])
    assert result["status"] == "ran" and result["commit"] == commit
    assert (worker / "artifacts" / "pretrain" / "model.safetensors").exists()

    assert not (orchestrator / "artifacts" / "pretrain").exists()
    restored = in_project(orchestrator, "import json; from pipelines import remote, graph;"
                          "print(json.dumps(remote.check_out_run('pretrain', graph.stage_env('', 'sqlite:///x.db'))))")
    assert json.loads(restored.stdout.splitlines()[-1])["status"] == "restored"
    for out in ("metrics/pretrain.json", "plots/pretrain_loss.png", "artifacts/pretrain/model.safetensors"):
        assert (orchestrator / out).read_bytes() == (worker / out).read_bytes(), out
    assert "didn't change, skipping" in dvc(orchestrator, "repro", "pretrain")
    assert "up to date" in dvc(orchestrator, "status", "pretrain")


def test_check_out_refuses_to_run_a_stage_no_worker_ran(orchestrator):
    proc = in_project(orchestrator, "from pipelines import remote, graph;"
                      "remote.check_out_run('domain', graph.stage_env('', 'sqlite:///x.db'))", check=False)
    assert proc.returncode != 0
    assert "ran on a worker, but DVC found no run of it" in proc.stdout + proc.stderr
    assert not (orchestrator / "artifacts" / "domain").exists()


def test_uncommitted_code_and_a_missing_remote_are_refused_before_anything_is_sent(orchestrator):
    lm = orchestrator / "core" / "lm.py"
    original = lm.read_text()
    lm.write_text(original + "\n# local edit\n")
    try:
        proc = in_project(orchestrator, SHIP, check=False)
        assert proc.returncode != 0 and "core/lm.py has uncommitted changes" in proc.stderr
    finally:
        lm.write_text(original)
    config = orchestrator / ".dvc" / "config"
    saved = config.read_text()
    dvc(orchestrator, "remote", "default", "--unset")
    try:
        proc = in_project(orchestrator, SHIP, check=False)
        assert proc.returncode != 0 and "need a default DVC remote" in proc.stderr
    finally:
        config.write_text(saved)
