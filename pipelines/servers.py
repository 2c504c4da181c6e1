"""`lifecycle server`: a Prefect server and an MLflow tracking server with SQLite stores under the project.

Both bind 127.0.0.1 unless asked otherwise; put a reverse proxy with authentication in front of them before
binding anything else (neither server authenticates by default).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from core import stage_host
from core.errors import LifecycleError
from core.process import ORPHAN_SAFE

LOOPBACK = "127.0.0.1"


def commands(root: Path, host: str, prefect_port: int, mlflow_port: int) -> dict[str, tuple[list[str], dict, str]]:
    """{server: (command, extra environment, health URL)}."""
    prefect_home = root / ".prefect"
    mlflow_dir = root / "mlflow"
    return {
        "prefect": ([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(prefect_port)],
                    {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"},
                    f"http://{host}:{prefect_port}/api/health"),
        "mlflow": ([sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(mlflow_port),
                    "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                    "--artifacts-destination", str(mlflow_dir / "artifacts"), "--workers", "1"],
                   {}, f"http://{host}:{mlflow_port}/health"),
    }


def client_env(host: str, prefect_port: int, mlflow_port: int) -> dict[str, str]:
    """What clients (the flow, workers, stages) export to use these servers."""
    return {"PREFECT_API_URL": f"http://{host}:{prefect_port}/api",
            "MLFLOW_TRACKING_URI": f"http://{host}:{mlflow_port}"}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, what: str, log: Path) -> None:
    """Poll a starting server's health URL (servers announce readiness no other way) until it answers; a
    LifecycleError naming its log if it exits first or does not answer within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if proc.poll() is not None:
            raise LifecycleError(f"{what} exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise LifecycleError(f"{what} did not answer {url} within {timeout_s:.0f} s; see {log}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, group: bool = True) -> None:
    """SIGTERM, then SIGKILL after 20 s: to the server's process group (its worker children too) when it leads one."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(root: Path | None = None, host: str = LOOPBACK, prefect_port: int = 4200, mlflow_port: int = 5000,
            timeout_s: float = 180) -> Iterator[dict[str, str]]:
    """Start both servers and a stage host, wait until the servers answer, yield the client environment, stop
    them on exit. Runs that name the host (LIFECYCLE_STAGE_HOST) fork their stages from it and skip starting
    their own."""
    root = (root or Path.cwd()).resolve()
    logs = root / ".servers"
    logs.mkdir(parents=True, exist_ok=True)
    (root / "mlflow").mkdir(exist_ok=True)
    (root / ".prefect").mkdir(exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, (cmd, extra, _) in commands(root, host, prefect_port, mlflow_port).items():
            with open(logs / f"{name}.log", "ab") as log:
                procs[name] = subprocess.Popen(cmd, cwd=root, env={**os.environ, **extra}, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        with stage_host_for_run():
            for name, (_, _, url) in commands(root, host, prefect_port, mlflow_port).items():
                wait_healthy(procs[name], url, timeout_s, f"{name} server", logs / f"{name}.log")
            yield {**client_env(host, prefect_port, mlflow_port),
                   stage_host.SOCKET_ENV: os.environ[stage_host.SOCKET_ENV]}
    finally:
        for proc in procs.values():
            stop(proc)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def temporary_prefect_server(port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a Prefect API server on 127.0.0.1:`port` for one client (no UI, no background
    services: Prefect's own temporary server), which stops when the process that starts it dies."""
    import prefect

    site_packages = str(Path(prefect.__file__).parent.parent)
    cmd = [sys.executable, "-c", ORPHAN_SAFE, "-m", "uvicorn", "--app-dir", site_packages, "--factory",
           "prefect.server.api.server:create_app", "--host", LOOPBACK, "--port", str(port), "--log-level", "error",
           "--lifespan", "on"]
    return cmd, {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


@contextlib.contextmanager
def stage_host_for_run(enabled: bool = True) -> Iterator[None]:
    """The run's stage host (core/stage_host.py) for as long as the run, named in this process's environment
    (so in every stage's); a host it names already is kept (`lifecycle run` starts it early, alongside the
    Prefect server, and the flow finds it). Off: no host named. The host dies with this process, its stages
    with it."""
    if not enabled:
        with _environ_without(stage_host.SOCKET_ENV):
            yield
        return
    if os.environ.get(stage_host.SOCKET_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="lifecycle-host-") as folder:
        sock = Path(folder) / "host.sock"  # a private folder: only this user can reach the host
        proc = stage_host.start(sock, start_new_session=True)  # a Ctrl-C reaches stages through their clients only
        os.environ[stage_host.SOCKET_ENV] = str(sock)
        try:
            yield
        finally:
            os.environ.pop(stage_host.SOCKET_ENV, None)
            stop(proc, group=False)


@contextlib.contextmanager
def _environ_without(name: str) -> Iterator[None]:
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


@contextlib.contextmanager
def prefect_api_for_run(timeout_s: float = 120) -> Iterator[None]:
    """The Prefect API one `lifecycle run` talks to: the configured one (PREFECT_API_URL: `lifecycle server`, a
    team's server, Prefect Cloud), else a temporary server for this run only, stopped at its end.

    Prefect would start that temporary server itself, but a run killed with SIGKILL (or out of memory) left it
    running. Started here, through the same launcher as the stages, the kernel stops it when the run dies."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/api"
    home = Path(os.environ.get("PREFECT_HOME", ".prefect"))
    home.mkdir(parents=True, exist_ok=True)
    cmd, extra = temporary_prefect_server(port)
    print(f"Prefect: a temporary API server for this run on {url}", flush=True)
    with open(home / "temporary-server.log", "ab") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, f"{url}/health", timeout_s, "Prefect's temporary API server (or set PREFECT_API_URL to "
                     "a running server)", home / "temporary-server.log")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                # Prefect's log and event workers send in batches: what they still hold goes out while the server
                # is up (stopped first, they retried it for ~70 s at exit and printed 'Error logging to API')
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        stop(proc, group=False)  # it shares this run's process group


def serve_forever(host: str, prefect_port: int, mlflow_port: int) -> None:
    if host != LOOPBACK:
        print(f"warning: binding {host}: neither server authenticates; put an authenticating proxy in front",
              file=sys.stderr)
    with running(host=host, prefect_port=prefect_port, mlflow_port=mlflow_port) as env:
        print("Prefect and MLflow servers are up (logs in .servers/), and a stage host for the runs that name it. "
              "In other shells:")
        for key, value in env.items():
            print(f"  export {key}={value}")
        print("Ctrl-C stops both servers and the stage host.", flush=True)

        def interrupt(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)  # stop the servers on SIGTERM too, not just Ctrl-C
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
