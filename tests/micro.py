"""The micro profile (profiles/micro.yaml): the whole lifecycle in seconds, for tests, in a copy of the project."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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


def lifecycle(project: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
                "PREFECT_HOME": str(project / ".prefect"), "LIFECYCLE_THREADS": "2", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=project, env=full_env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lifecycle {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def stage_env(root: Path, **extra: str) -> dict:
    """The environment a test runs one stage of a micro project in (its own MLflow store, one thread)."""
    import os

    return {**os.environ, "PYTHONPATH": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'm.db'}",
            "LIFECYCLE_THREADS": "1", **extra}


def start_stage(root: Path, stage: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=root, env=stage_env(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def kill_at_checkpoint(proc: subprocess.Popen, min_step: int, before_kill=None) -> int:
    """Read the stage's output until it reports a checkpoint at or after `min_step`, then SIGKILL it (the
    stage's own process only, as a crash would); return that step. `before_kill(proc)` runs just before."""
    import re
    import signal

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
