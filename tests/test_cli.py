"""The command line's error path: a clear error, exit 2, and the error (with its fix) the last thing printed."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_outside_a_project_is_an_error_naming_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: params.yaml not found in {tmp_path}: run lifecycle from the project's root, the folder that holds "
        "dvc.yaml and params.yaml")
    assert "Traceback" not in proc.stderr and "temporary server" not in proc.stderr  # refused before the flow

