"""dvc.yaml's stage graph and the `dvc` calls the flow makes (locally and on a worker)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML

from core.errors import LifecycleError
from core.process import ORPHAN_SAFE

DVC_FILE = Path("dvc.yaml")
_VAR = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def stage_specs(dvc_file: Path = DVC_FILE) -> dict[str, dict]:
    return YAML(typ="safe").load(dvc_file.read_text(encoding="utf-8")).get("stages") or {}


def stage_names(dvc_file: Path = DVC_FILE) -> list[str]:
    return list(stage_specs(dvc_file))


def _paths(entries: list | None) -> list[str]:
    """dvc.yaml's list entries are a path or {path: options}."""
    out = []
    for entry in entries or []:
        out.extend(entry if isinstance(entry, dict) else [entry])
    return [str(p) for p in out]


def _resolve(path: str, params: dict) -> str:
    def value(match: re.Match) -> str:
        node: object = params
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise LifecycleError(f"dvc.yaml: '${{{match.group(1)}}}' is not a key of params.yaml")
            node = node[part]
        return str(node)

    return _VAR.sub(value, path)


def stage_deps(name: str, params: dict, specs: dict | None = None) -> list[str]:
    spec = (specs or stage_specs())[name]
    return [_resolve(p, params) for p in _paths(spec.get("deps"))]


def stage_outs(name: str, specs: dict | None = None) -> list[str]:
    spec = (specs or stage_specs())[name]
    return _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream(name: str, params: dict, specs: dict | None = None) -> list[str]:
    """The stages whose outputs `name` depends on, directly or not, in dvc.yaml's order."""
    specs = specs or stage_specs()
    if name not in specs:
        raise LifecycleError(f"unknown stage '{name}'; stages: {', '.join(specs)}")
    found: set[str] = set()
    todo = [name]
    while todo:
        deps = stage_deps(todo.pop(), params, specs)
        for other in specs:
            if other not in found and any(_overlaps(d, o) for d in deps for o in stage_outs(other, specs)):
                found.add(other)
                todo.append(other)
    return [s for s in specs if s in found]


def stages_for(targets: list[str] | None, params: dict) -> list[str]:
    """Every stage (no targets), or the targets and their upstream stages, in dvc.yaml's order."""
    specs = stage_specs()
    if not targets:
        return list(specs)
    wanted = set(targets)
    for target in targets:
        wanted.update(upstream(target, params, specs))
    return [s for s in specs if s in wanted]


def stage_env(parent_run_id: str, tracking_uri: str) -> dict:
    """The environment a stage runs in: this interpreter for the stage commands, the MLflow parent run."""
    from core import tracking

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["LIFECYCLE_PYTHON"] = sys.executable  # stages/run, the command of every stage, runs this interpreter
    env[tracking.PARENT_ENV] = parent_run_id
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def dvc(args: list[str], env: dict | None = None, what: str = "") -> str:
    """Run `python -m dvc ARGS`, streaming its output; its text, or a LifecycleError with DVC's error lines."""
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SAFE, "-m", "dvc", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    captured = bytearray()
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):
        captured += chunk
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    code = proc.wait()
    text = captured.decode("utf-8", "replace")
    if code != 0:
        raise LifecycleError(f"{what or 'dvc ' + ' '.join(args)} failed (exit {code}){error_block(text)}")
    return text


def error_block(text: str) -> str:
    """A failed stage's own error, whole (its message may run over several lines and end with the fix), else
    DVC's error lines."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error: [")), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("ERROR: failed to reproduce")),
                   len(lines))
        return ":\n" + "\n".join(lines[start:end])[-6000:]
    tail = "\n".join(line for line in lines if line.startswith(("error", "ERROR")))[-2000:]
    return ": " + tail if tail else ""


def dvc_quiet(args: list[str], cwd: Path | None = None) -> str:
    """A short `dvc` query's output ('' when it fails)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def lock_record(name: str, lock_file: Path = Path("dvc.lock")) -> dict:
    """dvc.lock's record of a stage (its deps', params' and outs' hashes); {} before its first run."""
    if not lock_file.exists():
        return {}
    return ((YAML(typ="safe").load(lock_file.read_text(encoding="utf-8")) or {}).get("stages") or {}).get(name) or {}


def run_dvc_stage(name: str, env: dict, pull: bool = False) -> dict:
    """`dvc repro` one stage; report whether its command ran (stages/run marks it), DVC skipped it (its dvc.lock
    record unchanged) or restored its outputs from the run cache (record changed, command not run)."""
    start = time.perf_counter()
    before = lock_record(name)
    with tempfile.TemporaryDirectory(prefix="lifecycle-stage-") as tmp:
        marker = Path(tmp) / "ran"
        dvc(["repro", "--single-item", name, *(["--pull"] if pull else [])],
            {**env, "LIFECYCLE_RAN_MARKER": str(marker)}, f"stage '{name}'")
        ran = marker.exists()
        started = marker.read_text() if ran else ""  # "host": forked by the run's stage host
    status = "ran" if ran else "skipped" if lock_record(name) == before else "restored"
    return {"stage": name, "status": status, "wall_s": time.perf_counter() - start,
            **({"started": started or "fresh"} if ran else {})}


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LifecycleError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()
