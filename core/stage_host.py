"""Warm stage starts: one process imports the heavy libraries once and forks every stage of a run.

A stage is a fresh `python -m stages.<name>` that spends ~5 s importing torch, transformers, TRL, PEFT and MLflow
before its first step (measured per stage: 3.7-7.2 s under `-X importtime`; a tiny stage trains for less). Over a
run of nine stages that is most of a minute. So `lifecycle run` starts a host (`serve`), which imports those
libraries and no project module, then waits on a Unix socket; `stages/run`, the command of every DVC stage, runs
this module's client instead of the stage when the host's socket is in its environment. The client hands the host
its stdin, stdout and stderr (the descriptors themselves), its working directory, environment and arguments; the
host forks a child that takes them over and runs the stage module as `__main__`, as `python -m` would. The client
forwards signals to that child and exits with its status (killed by a signal: the same signal), so DVC and the
flow see a stage process as before.

The child is a plain process of the stage: it dies when the host dies (the host dies with the run) and when the
client dies (DVC killed), so a killed run leaves nothing behind. Where the host cannot stand in for a fresh
process it refuses and the client runs the stage itself: no host in the environment (a plain `dvc repro`, a GPU
worker), a host that is gone, or an environment that differs from the host's in a variable the libraries read
when they are imported (HF_*, TORCH*, OMP_*, ...). Imports here are the standard library's and core.process: the
client must start in milliseconds.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
import traceback

SOCKET_ENV = "LIFECYCLE_STAGE_HOST"  # the host's socket path, in the stages' environment
# read by the preloaded libraries at import time: a stage whose environment differs here starts fresh
# (not TOKENIZERS_PARALLELISM, which tokenizers reads when it first runs in parallel, nor MLflow's settings, read
# when used: the flow sets some after its host started)
IMPORT_TIME_ENV = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "CUDA_", "NCCL_",
                   "PYTHONHASHSEED", "PYTHONWARNINGS", "MPLBACKEND")
PROJECT_PACKAGES = ("core", "stages", "tasks", "pipelines")


# what the stages import; transformers and TRL load a class's module on first access, so the classes are touched
PRELOAD = {"matplotlib.pyplot": (), "mlflow": (), "mlflow.store.tracking.sqlalchemy_store": (), "numpy": (),
           "torch": (), "safetensors.torch": (), "datasets": (), "peft": (), "datatrove.pipeline.filters": (),
           "transformers": ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoTokenizer",
                            "LlamaForCausalLM", "PreTrainedTokenizerFast", "TrainerCallback"),
           "trl": ("DPOTrainer", "GRPOTrainer", "RewardTrainer", "SFTTrainer")}


def preload() -> None:
    """Import PRELOAD (no torch operation: OpenMP must not start before a fork)."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")  # as core.tracking does, before pyplot
    for name, attributes in PRELOAD.items():
        module = importlib.import_module(name)
        for attribute in attributes:
            getattr(module, attribute)


def import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


# ------------------------------------------------------------------------------------------------------ the host
def start(path: Path, **popen: object) -> subprocess.Popen:
    """A host listening on `path` (a new socket file, in a folder only this user can reach) from the moment this
    returns: the socket is bound here and handed over, so a client that connects while the host is still
    importing waits for it instead of missing it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(16)
        return subprocess.Popen([sys.executable, "-m", "core.stage_host", "serve", str(listener.fileno())],
                                pass_fds=[listener.fileno()], **popen)
    finally:
        listener.close()


def serve(listener: socket.socket) -> None:
    """Preload, then fork a stage per request on `listener` until the parent (the run) dies."""
    from core.process import die_with_parent

    die_with_parent(signal.SIGKILL)
    before = dict(os.environ)
    preload()
    # what the libraries put in the environment as they were imported (e.g. torch's TORCHINDUCTOR_CACHE_DIR): a
    # stage gets them where its environment lacks them, as it would have from its own imports
    added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    host_env = import_time_env(os.environ)
    for name in [m for m in sys.modules if m.split(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]  # a stage imports the project's code from its own checkout, as a fresh process does
    base_path = [p for p in sys.path[1:] if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector; children are reaped below
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}  # child pid -> its client's connection
    while True:
        for key, _ in selector.select():
            if key.fileobj is wake_r:
                wake_r.recv(4096)
                _reap(waiting)
                continue
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            differing = sorted({k for k, _ in import_time_env({**added, **request["env"]}).items() ^ host_env.items()})
            if differing:
                with contextlib.suppress(OSError):  # the client is gone
                    _send(conn, {"refused": f"{', '.join(differing)} differ(s) from the stage host's, read at import"})
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                for fobj in (listener, wake_r, wake_w):
                    fobj.close()
                _become_stage(conn, request, fds, base_path, added)  # never returns
            for fd in fds:
                os.close(fd)
            waiting[pid] = conn


def _reap(waiting: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):  # the client is gone
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


def _become_stage(conn: socket.socket, request: dict, fds: list[int], base_path: list[str], added: dict) -> None:
    """In the forked child: take over the client's descriptors, directory, environment and arguments, run the
    module as `__main__`, and exit as the interpreter would."""
    from core.process import die_with_parent

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_parent(signal.SIGKILL)  # the host is gone: so is the run
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                      line_buffering=os.isatty(1), write_through=unbuffered)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in added.items():
            os.environ.setdefault(key, value)
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *extra, *base_path]
        # the client's end closes when it dies (DVC killed): the stage must not outlive it
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        _send(conn, {"pid": os.getpid()})
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - the stage's own uncaught error, printed as Python would
        traceback.print_exc()
    finally:
        try:
            threading._shutdown()  # as at interpreter exit: non-daemon threads end first, then atexit handlers
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with_client(conn: socket.socket) -> None:
    try:
        conn.recv(1)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            raise ValueError("the client hung up mid-request")
        data += more
    return json.loads(data), fds


# ---------------------------------------------------------------------------------------------------- the client
def run_module(module: str, args: list[str]) -> None:
    """Run `module` in a child of the host named by SOCKET_ENV and exit with its status; without a host that will
    take it, run it here (exec: the same process DVC started)."""
    from core.process import die_with_parent

    die_with_parent()  # DVC killed: SIGTERM, forwarded to the stage below
    served = _through_host(os.environ.get(SOCKET_ENV), module, args)
    if served is None:
        os.execv(sys.executable, [sys.executable, "-m", module, *args])
    if served < 0:  # the stage died by a signal: so does this process, for DVC to see the same
        if -served != signal.SIGKILL:  # (its handler cannot be set, nor caught)
            signal.signal(-served, signal.SIG_DFL)
        os.kill(os.getpid(), -served)
    sys.exit(served)


def request(path: str, module: str, args: list[str], cwd: str, env: dict, fds: list[int]):
    """Ask the host at `path` to run `module` with `fds` as stdin, stdout, stderr. Returns (the connection, its
    reply stream, the host's answer: {"pid": N}, or {"refused": why}, or {} when the host died first); None when
    no host listens there. The stage's exit status is the next line of the reply stream."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None  # the host is gone
    message = {"module": module, "args": args, "cwd": cwd, "env": env}
    socket.send_fds(conn, [json.dumps(message).encode() + b"\n"], fds)
    replies = conn.makefile("rb")
    first = replies.readline()
    return conn, replies, json.loads(first) if first else {}


def _through_host(path: str | None, module: str, args: list[str]) -> int | None:
    asked = request(path, module, args, os.getcwd(), dict(os.environ), [0, 1, 2]) if path else None
    if asked is None or not asked[2]:
        return None  # no host, or it died before it forked: nothing ran
    _conn, replies, answer = asked
    if "refused" in answer:
        print(f"[stage host] {module} starts fresh: {answer['refused']}", file=sys.stderr, flush=True)
        return None
    pid = answer["pid"]
    marker = os.environ.get("LIFECYCLE_RAN_MARKER")
    if marker:
        with open(marker, "w") as f:
            f.write("host")  # the flow's timings say the stage started warm

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    last = replies.readline()
    if not last:  # the host died: its children die with it (SIGKILL)
        return -signal.SIGKILL
    return json.loads(last)["exit"]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(socket.socket(fileno=int(sys.argv[2])))
    elif len(sys.argv) >= 2:
        run_module(sys.argv[1], sys.argv[2:])
    else:
        sys.exit("usage: python -m core.stage_host serve LISTENING_FD | MODULE [ARGS...]")


if __name__ == "__main__":
    main()
