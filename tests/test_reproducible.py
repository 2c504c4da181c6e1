"""Two clean runs of the micro pipeline give the same bytes (every dvc.lock output hash, every metrics file), and
secrets planted in the environment of one of them appear nowhere: not in the MLflow store or its artifacts,
not in Prefect's store, not in any output, report or log.

The first is the session's micro run (`--profile micro`, secrets planted: conftest's `micro_run`); the second,
here, gives the profile's values as `--set` arguments, so the two ways of asking for the profile agree too. Both
fork their stages from a stage host; a fresh process writes the same bytes (pretrain and sft, below)."""
from __future__ import annotations

import json
import subprocess
import sys

from ruamel.yaml import YAML

from core.stage_host import SOCKET_ENV
from tests.micro import MICRO, SECRETS, copy_project, lifecycle, make_project, stage_env


def outputs(project) -> dict[str, dict[str, str]]:
    """{stage: {output path: md5}} from dvc.lock."""
    lock = YAML(typ="safe").load((project / "dvc.lock").read_text())
    return {stage: {o["path"]: o["md5"] for o in entry.get("outs", [])} for stage, entry in lock["stages"].items()}


def test_two_clean_micro_runs_are_identical_and_planted_secrets_leak_nowhere(micro_run, tmp_path):
    first = micro_run.root
    second = make_project(tmp_path / "second")
    lifecycle(second, "run", *[a for s in MICRO for a in ("--set", s)])

    a, b = outputs(first), outputs(second)
    assert set(a) == set(b) and len(a) >= 9
    differing = {stage: [p for p in a[stage] if a[stage][p] != b[stage].get(p)] for stage in a}
    assert not any(differing.values()), differing
    for path in sorted((first / "metrics").glob("*.json")):
        assert json.loads(path.read_text()) == json.loads((second / "metrics" / path.name).read_text()), path.name

    logs = micro_run.stdout + micro_run.stderr
    for name, value in SECRETS.items():
        assert value not in logs, f"{name} in the run's output"
        needle = value.encode()
        leaked = [str(p.relative_to(first)) for p in first.rglob("*") if p.is_file() and needle in p.read_bytes()]
        assert not leaked, f"{name} found in {leaked}"


def test_a_stage_started_fresh_writes_the_bytes_the_stage_host_forked_one_wrote(micro_run, tmp_path):
    """The session's micro run forked every stage from its stage host; pretrain (the project's loop) and sft (TRL,
    PEFT), started again as fresh `python -m stages.<name>` processes with no host, write the same bytes."""
    root = copy_project(micro_run.root, tmp_path / "project")
    env = {k: v for k, v in stage_env(root).items() if k != SOCKET_ENV}
    assert [s.get("started") for s in json.loads((root / "reports" / "timings.json").read_text())["stages"]
            if s["stage"] in ("pretrain", "sft")] == ["host", "host"]
    for stage in ("pretrain", "sft"):
        assert not (root / "checkpoints" / stage).exists()  # nothing to resume from: the stage trains again
        outputs = [root / "artifacts" / stage, root / "metrics" / f"{stage}.json"]
        before = {p: p.read_bytes() for out in outputs for p in sorted([out, *out.rglob("*")]) if p.is_file()}
        proc = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        after = {p: p.read_bytes() for out in outputs for p in sorted([out, *out.rglob("*")]) if p.is_file()}
        assert sorted(after) == sorted(before), stage
        assert [str(p) for p in before if before[p] != after[p]] == [], stage


def flat(value, prefix: str = "") -> dict:
    """Nested metrics as {dotted key: leaf}; lists by index."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def test_the_micro_run_gives_the_pinned_values(micro_run):
    """Every value of every metrics file of the session's micro run, as pinned in tests/micro_metrics.json (the run
    is the same bytes run to run, above): a change that moves what a stage computes fails here by key, even where
    the other tests only check a type or a range. Floats within 1e-6 relative, for another CPU's rounding."""
    import pytest

    from tests.micro import ROOT

    pinned = json.loads((ROOT / "tests" / "micro_metrics.json").read_text())
    got = {p.stem: json.loads(p.read_text()) for p in sorted((micro_run.root / "metrics").glob("*.json"))}
    want, have = flat(pinned), flat(got)
    fix = (f"if the change means to move them, copy {micro_run.root / 'metrics'}/*.json into "
           "tests/micro_metrics.json ({stage: metrics})")
    assert sorted(have) == sorted(want), f"keys differ: {sorted(set(have) ^ set(want))[:20]}; {fix}"
    moved = {k: (want[k], have[k]) for k in want
             if (have[k] != pytest.approx(want[k], rel=1e-6) if isinstance(want[k], float) else have[k] != want[k])}
    assert not moved, f"{len(moved)} value(s) moved, e.g. {dict(list(moved.items())[:8])}; {fix}"
