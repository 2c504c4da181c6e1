"""core/stage_host.py: a stage forked from the run's host behaves as the fresh process it replaces (output, exit
status, signals, environment, death of the client or of the host), and the host refuses what it cannot stand in for.
The stages themselves run through the host in every `lifecycle run` of the suite (test_e2e checks they did)."""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from core import stage_host
from core.stage_host import SOCKET_ENV

ROOT = Path(__file__).resolve().parents[1]
PROBE = '''
import json, os, signal, sys
print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv[1:], "name": __name__,
                  "x": os.environ.get("X"), "line": sys.stdin.readline().strip()}), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1:] == ["wait"]:
    signal.pause()  # until a signal ends it
if sys.argv[1:] == ["raise"]:
    raise ValueError("the probe's own error")
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
'''


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host")
    (folder / "probe_stage.py").write_text(PROBE)
    sock = folder / "host.sock"
    proc = stage_host.start(sock, cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    yield folder, sock, proc  # listening already: the first client waits while the host imports
    proc.kill()


def client(folder: Path, sock: Path | None, *args: str, **env: str) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "X": "1", **env}
    if sock:
        full[SOCKET_ENV] = str(sock)
    return subprocess.Popen([sys.executable, "-m", "core.stage_host", "probe_stage", *args], cwd=folder, env=full,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_line(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


def test_a_forked_stage_gets_the_clients_streams_directory_arguments_environment_and_exit_status(host):
    folder, sock, server = host
    proc = client(folder, sock, "3")
    out, err = proc.communicate("hello\n", timeout=120)
    seen = json.loads(out)
    assert proc.returncode == 3 and "to stderr" in err
    assert seen["ppid"] == server.pid  # forked by the host, not the client's own process
    assert seen == {**seen, "cwd": str(folder), "argv": ["3"], "name": "__main__", "x": "1", "line": "hello"}
    proc = client(folder, sock, "raise")
    _, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 1 and "ValueError: the probe's own error" in err  # a traceback, as Python prints


def test_the_host_refuses_an_environment_read_at_import_and_the_client_runs_the_stage_itself(host):
    folder, sock, _ = host
    importlib.import_module("torch")  # sets TORCHINDUCTOR_CACHE_DIR here as in the host: no reason to refuse

    proc = client(folder, sock, "0")
    out, _ = proc.communicate("x\n", timeout=120)
    assert json.loads(out)["ppid"] == host[2].pid
    for proc in (client(folder, sock, "0", HF_HUB_OFFLINE="maybe"), client(folder, None, "0"),
                 client(folder, folder / "no-such.sock", "0")):
        out, _ = proc.communicate("x\n", timeout=120)
        assert proc.returncode == 0 and json.loads(out)["pid"] == proc.pid  # exec'd in place: a fresh process


def test_a_signal_to_the_client_reaches_the_stage_and_a_killed_client_takes_it_along(host):
    folder, sock, server = host
    proc = client(folder, sock, "wait")
    proc.stdin.write("x\n")
    proc.stdin.flush()
    seen = first_line(proc)
    pid = seen["pid"]
    assert seen["ppid"] == server.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # the stage died of SIGTERM, and so did the client
    assert not psutil.pid_exists(pid)  # and the host reaped it

    proc = client(folder, sock, "wait")
    proc.stdin.write("x\n")
    proc.stdin.flush()
    pid = first_line(proc)["pid"]
    proc.kill()  # as when DVC is killed: nothing can forward a signal
    proc.wait()
    gone, alive = psutil.wait_procs([psutil.Process(pid)], timeout=30)
    assert gone and not alive


def test_the_stage_dies_with_the_host(tmp_path):
    (tmp_path / "probe_stage.py").write_text(PROBE)
    sock = tmp_path / "host.sock"
    server = stage_host.start(sock, cwd=ROOT)
    proc = client(tmp_path, sock, "wait")
    proc.stdin.write("x\n")
    proc.stdin.flush()
    pid = first_line(proc)["pid"]
    server.kill()  # the run died (the host dies with it)
    server.wait()
    gone, alive = psutil.wait_procs([psutil.Process(pid)], timeout=30)
    assert gone and not alive
    assert proc.wait(timeout=30) == -signal.SIGKILL
