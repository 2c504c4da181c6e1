"""The command line's error path: a clear error, exit 2, and the error (with its fix) the last thing printed; and
the README's `dvc repro` from a plain shell."""
import shutil
import subprocess
import sys
from pathlib import Path

from tests.micro import copy_project

ROOT = Path(__file__).resolve().parents[1]


def test_run_outside_a_project_is_an_error_naming_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: params.yaml not found in {tmp_path}: run lifecycle from the project's root, the folder that holds "
        "dvc.yaml and params.yaml")
    assert "Traceback" not in proc.stderr and "temporary server" not in proc.stderr  # refused before the flow


def test_dvc_repro_runs_the_stages_from_a_shell_without_the_venv(micro_run, tmp_path):
    """The README's `.venv/bin/python -m dvc repro`, from a shell whose PATH holds no venv: the stage commands
    (`sh stages/run <stage>`) find the project's interpreter in .venv. Forced, in a copy of the session's micro
    run whose clean data and tokenizer are gone: both stages run their commands."""
    root = copy_project(micro_run.root, tmp_path / "project")
    (root / ".venv").symlink_to(Path(sys.prefix))
    shutil.rmtree(root / "data" / "clean")
    shutil.rmtree(root / "artifacts" / "tokenizer")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'm.db'}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "LIFECYCLE_THREADS": "1"}
    proc = subprocess.run([str(root / ".venv" / "bin" / "python"), "-m", "dvc", "repro", "--force", "tokenizer"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Running stage 'clean'" in proc.stdout and "Running stage 'tokenizer'" in proc.stdout, proc.stdout[-3000:]
    assert (root / "data" / "clean" / "instructions.train.jsonl").exists()
    assert (root / "artifacts" / "tokenizer" / "tokenizer.json").exists()
