"""Fault injection for the TRL-based and PPO training stages (pretrain and domain: tests/test_training.py).

Each stage is SIGKILLed twice at checkpoints picked by a seeded random draw, rerun after each kill, and must end
on the curve and metrics of an uninterrupted run; a killed run leaves no output behind and DVC caches none.
"""
from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from core.config import apply_overrides
from tests.micro import MICRO, checkpoint_left, copy_project, kill_at_checkpoint, run_stage, start_stage

STEPS = 8
FAULTS = [  # every stage with checkpoints every 2 steps and a loss row every step
    f"sft.steps={STEPS}", "sft.checkpoint_every=2", "sft.log_every=1",
    f"reward.steps={STEPS}", "reward.checkpoint_every=2", "reward.log_every=1",
    f"align.dpo.steps={STEPS}", "align.dpo.checkpoint_every=2", "align.dpo.log_every=1",
    f"align.ppo.steps={STEPS}", "align.ppo.checkpoint_every=2",
    f"align.grpo.steps={STEPS}", "align.grpo.checkpoint_every=2", "align.grpo.log_every=1",
]
OUTPUTS = {"sft": "artifacts/sft", "reward": "artifacts/reward", "align": "artifacts/align"}
TIMING = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time",
          "num_tokens"}  # TRL's running count of tokens seen is not in its checkpoints: it restarts at a resume


@pytest.fixture(scope="module")
def project(tmp_path_factory, micro_run):
    """The session's micro run (every stage's inputs in place), with checkpoints every 2 of 8 steps."""
    root = copy_project(micro_run.root, tmp_path_factory.mktemp("faults") / "project")
    apply_overrides(root / "params.yaml", MICRO + FAULTS)
    return root


def result(root, stage):
    rows = json.loads((root / "plots" / f"{stage}.json").read_text())
    metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows], metrics


def weights(root, stage):
    from safetensors.torch import load_file

    return load_file(str(root / OUTPUTS[stage] / "model.safetensors"))


@pytest.mark.parametrize("stage, method, seed", [("sft", None, 0), ("reward", None, 1), ("align", "dpo", 2),
                                                 ("align", "ppo", 3), ("align", "grpo", 4)])
def test_killed_twice_at_random_steps_resumes_onto_the_uninterrupted_run(project, stage, method, seed):
    if method:
        apply_overrides(project / "params.yaml", [f"align.method={method}"])
    run_stage(project, stage)
    expected, expected_metrics = result(project, stage)
    expected_weights = weights(project, stage)
    assert not (project / "checkpoints" / stage).exists()  # a finished run leaves nothing to resume

    shutil.rmtree(project / OUTPUTS[stage])
    for name in (f"metrics/{stage}.json", f"plots/{stage}.json"):
        (project / name).unlink()
    first, second = sorted(random.Random(seed).sample(range(2, STEPS, 2), 2))
    resumed_from = []
    for kill_step in (first, second):
        killed_at = kill_at_checkpoint(start_stage(project, stage), kill_step)
        left = checkpoint_left(project, stage)
        assert left >= killed_at >= kill_step
        assert not (project / OUTPUTS[stage]).exists() and not (project / "metrics" / f"{stage}.json").exists()
        resumed_from.append(left)
    out, _ = run_stage(project, stage)
    # the rerun resumed from the checkpoint the second kill left: TRL's checkpoint-N, or PPO's "last at step N"
    found = re.findall(r"resumed from \S+?(?:/checkpoint-(\d+)| at step (\d+))", out)
    assert [int(a or b) for a, b in found] == [resumed_from[-1]], out[-2000:]
    rows, metrics = result(project, stage)
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for got, want in zip(rows, expected):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), got["step"]
    numeric = {k: v for k, v in expected_metrics.items() if isinstance(v, float) and k not in TIMING}
    assert {k: metrics[k] for k in numeric} == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    got_weights = weights(project, stage)
    assert max((got_weights[k] - w).abs().max().item() for k, w in expected_weights.items()) < 1e-4
    # the killed runs could not end their MLflow runs; the next run of the stage ended them as FAILED
    statuses = [r.info.status for r in stage_runs(project, stage)]
    assert statuses[:3] == ["FINISHED", "FAILED", "FAILED"] and "RUNNING" not in statuses


def stage_runs(root, stage):
    """The stage's MLflow runs in the project's store, newest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'm.db'}")
    experiment = client.get_experiment_by_name("lifecycle")
    return client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'", order_by=["start_time DESC"])


def test_sigterm_ends_the_run_failed_and_leaves_no_output(project):
    import signal

    proc = start_stage(project, "reward")
    for line in proc.stdout:
        if "checkpoint at step" in line:
            proc.send_signal(signal.SIGTERM)
            break
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert stage_runs(project, "reward")[0].info.status == "FAILED"
    assert not list((project / "artifacts").glob(".reward.tmp*"))  # no temporary output left either
