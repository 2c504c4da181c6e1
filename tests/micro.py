"""The micro profile (profiles/micro.yaml): the whole lifecycle in seconds, for tests, in a copy of the project.

One micro run per test session (conftest's `micro_run`) is the starting point of most project-level tests:
they take a `copy_project` of it instead of rebuilding clean, tokenizer and the models.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import sqlite3
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core import stage_host as core_stage_host
from core.config import profile_overrides

ROOT = Path(__file__).resolve().parents[1]

# profiles/micro.yaml as --set overrides, in the file's order
MICRO = profile_overrides(str(ROOT / "profiles" / "micro.yaml"))


def make_project(dest: Path, scale: float = 0.03) -> Path:
    """A copy of the project (code, dvc.yaml, params.yaml, .dvc) with micro sample data, in its own git repo."""
    for name in ("core", "stages", "pipelines", "tasks", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "prefect.yaml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "*.lock"))
    shutil.copytree(ROOT / "deploy", dest / "deploy")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "pipelines.sample_data", "--scale", str(scale)], cwd=dest, check=True,
                   capture_output=True)
    return dest


# planted in the session's micro run: test_reproducible looks for them in everything that run wrote
SECRETS = {
    "HF_TOKEN": "hf_FAKEtokenForLeakTest0123456789",
    "AWS_ACCESS_KEY_ID": "AKIAFAKELEAKTEST0000",
    "AWS_SECRET_ACCESS_KEY": "FAKEawsSecretKeyForLeakTest/abcdef012345",
    "MLFLOW_TRACKING_PASSWORD": "FAKEmlflowPasswordLeakTest-4242",
    "OPENAI_API_KEY": "sk-FAKEopenaiKeyLeakTest987654321",
}


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a project that ran, as if it had run there: git, DVC's cache and lock, outputs, and its MLflow
    store, whose absolute artifact locations are moved to the copy (runs there must not write into `src`)."""
    shutil.copytree(src, dest, symlinks=True)
    store = dest / "mlflow" / "mlflow.db"
    if store.exists():
        db = sqlite3.connect(store)
        with db:
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for column in [c[1] for c in db.execute(f'PRAGMA table_info("{table}")') if "CHAR" in c[2].upper()
                               or "TEXT" in c[2].upper()]:
                    db.execute(f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) WHERE "{column}" LIKE ?',
                               (str(src), str(dest), f"%{src}%"))
        db.close()
    return dest


_PREFECT: dict[str, str] = {}


def shared_prefect_api() -> str:
    """This test process's Prefect API server, started on first use: runs that talk to a running server (as a
    team's runs do, `lifecycle server`) skip the temporary server each bare `lifecycle run` starts (~5 s)."""
    if "url" not in _PREFECT:
        from pipelines.servers import free_port, stop, temporary_prefect_server, wait_healthy

        home = Path(tempfile.mkdtemp(prefix="prefect-api-"))
        port = free_port()
        health = f"http://127.0.0.1:{port}/api/health"
        cmd, extra = temporary_prefect_server(port)  # dies with this process
        log = open(home / "server.log", "wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **extra, "PREFECT_HOME": str(home)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(stop, proc)
        wait_healthy(proc, health, 180, "the tests' Prefect server", home / "server.log")
        _PREFECT["url"] = health.removesuffix("/health")
    return _PREFECT["url"]


def lifecycle(project: Path, *args: str, env: dict | None = None, check: bool = True,
              temporary_server: bool = False) -> subprocess.CompletedProcess:
    """`lifecycle ARGS` in `project`, against this process's shared Prefect server and stage host, as a team's
    runs use those of `lifecycle server` (or, with `temporary_server`, the ones a bare run starts and stops itself,
    as on a laptop)."""
    server = {} if temporary_server or args[:1] != ("run",) else {"PREFECT_API_URL": shared_prefect_api(),
                                                                  core_stage_host.SOCKET_ENV: str(stage_host())}
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
                "PREFECT_HOME": str(project / ".prefect"), "LIFECYCLE_THREADS": "1", **server, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=project, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lifecycle {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def stage_env(root: Path, **extra: str) -> dict:
    """The environment a test runs one stage of a micro project in (its own MLflow store, one thread)."""
    return {**os.environ, "PYTHONPATH": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'm.db'}",
            "LIFECYCLE_THREADS": "1", **extra}


# The kill-and-resume tests launch stages by the dozen, and a fresh `python -m stages.X` spends ~5 s of a micro
# run's ~7 importing torch, transformers, TRL and MLflow. They go through the stage host `lifecycle run` uses
# (core/stage_host.py), one per test process, shared by every project copy: each stage is forked from it and is a
# process of its own, which a test signals or SIGKILLs by pid.
_HOST: dict[str, object] = {}


def stage_host() -> Path:
    """This test process's stage host (started on first use, killed when the process ends): its socket."""
    proc = _HOST.get("proc")
    if proc is None or proc.poll() is not None:
        sock = Path(tempfile.mkdtemp(prefix="stage-host-")) / "host.sock"
        proc = core_stage_host.start(sock, cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        atexit.register(proc.kill)
        _HOST.update(proc=proc, sock=sock)
    return _HOST["sock"]


class StageProcess:
    """`python -m stages.<stage>` in `root`, forked from the stage host; used like a Popen with text stdout."""

    def __init__(self, root: Path, stage: str, env: dict):
        self.stderr = tempfile.TemporaryFile()  # unlinked: nothing left in the temp folder after the test
        read_end, write_end = os.pipe()
        with open(os.devnull, "rb") as null:
            asked = core_stage_host.request(str(stage_host()), f"stages.{stage}", [], str(root), env,
                                            [null.fileno(), write_end, self.stderr.fileno()])
        os.close(write_end)
        assert asked is not None, "no stage host listens"
        self.conn, self.replies, answer = asked
        assert "pid" in answer, f"the stage host did not fork the stage: {answer}"
        self.pid = answer["pid"]
        self.stdout = open(read_end, encoding="utf-8")
        self.returncode: int | None = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"stages in {self.pid}", timeout)
            self.returncode = json.loads(self.replies.readline())["exit"]
            self.stdout.close()
            self.conn.close()
        return self.returncode

    def communicate(self) -> tuple[str, str]:
        out = self.stdout.read()
        self.wait()
        self.stderr.seek(0)
        return out, self.stderr.read().decode("utf-8", errors="replace")


def start_stage(root: Path, stage: str, **extra: str) -> StageProcess:
    return StageProcess(root, stage, stage_env(root, **extra))


def run_stage(root: Path, stage: str, **extra: str) -> tuple[str, str]:
    """The stage run to its end; (stdout, stderr). Fails the test on a non-zero exit."""
    proc = start_stage(root, stage, **extra)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return out, err


def kill_at_checkpoint(proc: StageProcess | subprocess.Popen, min_step: int, before_kill=None) -> int:
    """Read the stage's output until it reports a checkpoint at or after `min_step`, then SIGKILL it (the
    stage's own process only, as a crash would); return that step. `before_kill(proc)` runs just before."""
    for line in proc.stdout:
        found = re.search(r"checkpoint at step (\d+)", line)
        if found and int(found.group(1)) >= min_step:
            if before_kill:
                before_kill(proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return int(found.group(1))
    proc.wait()
    raise AssertionError(f"the stage finished (exit {proc.returncode}) before a checkpoint at step {min_step}")


def checkpoint_left(root: Path, stage: str) -> int:
    """The step of the checkpoint a killed stage left, the one its next run must resume from. The kill comes
    after the stage printed "checkpoint at step N", and a loaded machine may let it save a later one first."""
    import torch

    work = root / "checkpoints" / stage
    last = work / "last"
    if (last / "trainer_state.pt").exists():  # core.train_loop
        return int(torch.load(last / "trainer_state.pt", weights_only=True)["step"])
    if (last / "state.pt").exists():  # core.ppo
        return len(torch.load(last / "state.pt", weights_only=True)["history"])
    steps = []  # TRL's checkpoint-N folders; one cut off mid-save has no readable trainer_state.json
    for folder in work.glob("checkpoint-*"):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            steps.append(int(folder.name.split("-")[1]))
        except (OSError, ValueError):
            pass
    assert steps, f"no checkpoint of {stage} left in {work}"
    return max(steps)


def save_micro_chat_model(path: Path) -> Path:
    """A one-layer Llama with the project's tokenizer (chat template included), saved as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages import tokenizer as tokenizer_stage

    tok = tokenizer_stage.build(["The review is positive.", "The review is negative."] * 50,
                                tokenizer_stage.Config(vocab_size=300))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
