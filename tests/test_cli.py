"""The command line's error path: a clear error, exit 2, and the error (with its fix) the last thing printed."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipelines import cli

ROOT = Path(__file__).resolve().parents[1]


def test_run_outside_a_project_is_an_error_naming_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: params.yaml not found in {tmp_path}: run lifecycle from the project's root, the folder that holds "
        "dvc.yaml and params.yaml")
    assert "Traceback" not in proc.stderr and "temporary server" not in proc.stderr  # refused before the flow


def test_the_temporary_server_stops_before_the_error_is_printed(tmp_path, monkeypatch, capsys):
    """What Prefect's temporary server prints while stopping (a cancelled database call's traceback, seen under
    load) must come before the error, not after it."""
    stops = []

    class Server:
        def stop(self):
            stops.append(True)
            print("Traceback: CancelledError while stopping", file=sys.stderr)

    monkeypatch.setitem(sys.modules, "prefect.server.api.server", types.SimpleNamespace(SubprocessASGIServer=Server))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run"])
    assert exit_.value.code == 2 and stops == [True]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: params.yaml not found")
