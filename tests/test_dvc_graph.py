"""dvc.yaml declares, for each stage, every project module that decides what the stage computes, so that editing
one re-runs exactly the stages that use it (a missing dep leaves stale outputs that DVC calls up to date)."""
import ast
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
# parse params, name errors, wrap main(), log to MLflow, tie a process to its parent: they do not change outputs
NOT_DEPS = {"core/config.py", "core/errors.py", "core/stage.py", "core/tracking.py", "core/process.py"}


def core_modules(path: Path, seen: set[str]) -> set[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "core":
            package = node.module.replace(".", "/")
            names = ([f"{package}/{a.name}.py" for a in node.names if (ROOT / package / f"{a.name}.py").is_file()]
                     or [f"{package}/__init__.py" if (ROOT / package).is_dir() else f"{package}.py"])
        elif isinstance(node, ast.Import):
            names = [a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("core.")]
        for name in names:
            if name not in seen and name not in NOT_DEPS and (ROOT / name).is_file():
                seen.add(name)
                core_modules(ROOT / name, seen)
    return seen


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage):
    code = {f"stages/{stage}.py"} | core_modules(ROOT / "stages" / f"{stage}.py", set())
    deps = set(STAGES[stage]["deps"])
    # a module is covered by its own path or by a directory dependency above it (core/cleaning)
    missing = sorted(m for m in code if not ({m} | {str(p) for p in Path(m).parents}) & deps)
    assert not missing, f"dvc.yaml stage '{stage}' imports {missing} but does not list them in deps"


def test_bytecode_is_not_part_of_a_directory_dependency():
    """tasks/ is a directory dependency: the __pycache__ any import writes into it must not make the stages that
    depend on it stale (it did: running the tests made reward, align and evaluate rerun)."""
    import subprocess
    import sys

    for path in ("tasks/__pycache__/sentiment.cpython-311.pyc", "tasks/stray.pyc"):
        proc = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", path], cwd=ROOT, capture_output=True,
                              text=True)
        assert proc.returncode == 0, (path, proc.stdout, proc.stderr)
    kept = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", "tasks/sentiment.py"], cwd=ROOT,
                          capture_output=True, text=True)
    assert kept.returncode == 1, kept.stdout  # the sources stay a dependency
