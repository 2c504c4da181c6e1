"""Several processes under `accelerate launch` (CPU ranks over gloo): DDP and FSDP2 follow the single-process
curve, rank 0 alone logs into the pipeline's MLflow run, and a killed multi-process run leaves no orphan
rank and resumes (here on one process) on the uninterrupted curve."""
import json

import pytest

from core.config import apply_overrides
from tests.micro import MICRO, checkpoint_left, copy_project, kill_at_checkpoint, run_stage, start_stage

RUN = ["pretrain.train.steps=12", "pretrain.train.log_every=2", "pretrain.train.eval_every=6",
       "pretrain.train.checkpoint_every=4", "pretrain.train.warmup_steps=2", "pretrain.train.grad_accum=2",
       "pretrain.val_blocks=6"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, micro_run):
    """The session's micro run (clean data, tokenizer) with a 12-step pretrain on two accumulation steps."""
    root = copy_project(micro_run.root, tmp_path_factory.mktemp("distributed") / "project")
    apply_overrides(root / "params.yaml", MICRO + RUN)
    return root


def run_pretrain(root, processes, strategy="ddp", **extra):
    apply_overrides(root / "params.yaml", [f"pretrain.train.processes={processes}",
                                           f"pretrain.train.strategy={strategy}"])
    return run_stage(root, "pretrain", **extra)


def curve(root):
    rows = json.loads((root / "plots" / "pretrain.json").read_text())
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows]


def metrics(root):
    return json.loads((root / "metrics" / "pretrain.json").read_text())


@pytest.fixture(scope="module")
def single(project):
    run_pretrain(project, 1)
    return curve(project), metrics(project)


def close(a, b, rel=2e-4):
    return len(a) == len(b) and all(x == pytest.approx(y, rel=rel) for x, y in zip(a, b))


def same_curve(got, want):
    """The same steps (a shorter or longer curve fails), each row's loss, grad norm and lr within 2e-4."""
    assert [r[0] for r in got] == [r[0] for r in want]
    for row, ref in zip(got, want):
        assert close(row[1:], ref[1:]), (row, ref)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_follow_the_single_process_curve(project, single, strategy):
    expected_curve, expected = single
    run_pretrain(project, 2, strategy)
    same_curve(curve(project), expected_curve)
    m = metrics(project)
    assert m["processes"] == 2 and m["train_tokens"] == expected["train_tokens"]
    assert m["val_loss"] == pytest.approx(expected["val_loss"], rel=2e-4)
    assert "mfu" not in m  # wall-clock figures live in MLflow, not in the DVC-tracked metrics
    assert not (project / "checkpoints" / "pretrain").exists()


def test_rank_zero_alone_logs_into_the_pipeline_run(project):
    import mlflow

    from core import tracking

    mlflow.set_tracking_uri(f"sqlite:///{project / 'm.db'}")
    exp = tracking.setup(project)
    with mlflow.start_run(experiment_id=exp, run_name="pipeline") as parent:
        pass
    run_pretrain(project, 2, **{tracking.PARENT_ENV: parent.info.run_id})
    runs = mlflow.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(runs) == 1 and runs.iloc[0]["tags.stage"] == "pretrain"
    assert runs.iloc[0]["status"] == "FINISHED" and runs.iloc[0]["metrics.processes"] == 2
    history = mlflow.tracking.MlflowClient().get_metric_history(runs.iloc[0]["run_id"], "loss")
    assert [h.step for h in history] == [2, 4, 6, 8, 10, 12]  # one value a step: no rank logged twice


def ranks_in(root):
    import psutil

    found = []
    for p in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if p.info["cwd"] == str(root) and "stages.pretrain" in " ".join(p.info["cmdline"] or []):
                found.append(p.pid)
        except psutil.Error:
            pass
    return found


def test_killed_multi_process_run_stops_every_rank_and_resumes(project, single):
    import psutil

    below = []  # the launcher and its ranks, taken just before the kill

    def note_children(proc):
        below.extend(psutil.Process(proc.pid).children(recursive=True))

    apply_overrides(project / "params.yaml", ["pretrain.train.processes=2", "pretrain.train.strategy=ddp"])
    killed_at = kill_at_checkpoint(start_stage(project, "pretrain"), 1, note_children)
    assert len(below) >= 3  # accelerate launch + 2 ranks
    _, alive = psutil.wait_procs(below, timeout=20)
    assert alive == [] and ranks_in(project) == []  # the launcher and both ranks went down with it

    left = checkpoint_left(project, "pretrain")
    assert left >= killed_at
    out, _ = run_pretrain(project, 1)  # a full-state checkpoint resumes on any number of processes
    assert f"resumed from checkpoints/pretrain/last at step {left}" in out
    same_curve(curve(project), single[0])


def test_domain_on_two_processes_matches_one(project, single):
    apply_overrides(project / "params.yaml", ["pretrain.train.processes=1"])
    results = []
    for processes in (1, 2):
        apply_overrides(project / "params.yaml", [f"domain.train.processes={processes}"])
        run_stage(project, "domain")
        results.append(json.loads((project / "metrics" / "domain.json").read_text()))
    apply_overrides(project / "params.yaml", ["domain.train.processes=1"])
    assert results[1]["processes"] == 2
    for key in ("ppl_domain_after", "ppl_general_after", "forgetting"):
        assert results[1][key] == pytest.approx(results[0][key], rel=2e-4)


def test_a_failing_rank_fails_the_stage_with_its_message(project):
    apply_overrides(project / "params.yaml", ["pretrain.train.processes=3"])  # 4 sequences over 3 ranks
    try:
        proc = start_stage(project, "pretrain")
        _, err = proc.communicate()
    finally:
        apply_overrides(project / "params.yaml", ["pretrain.train.processes=1"])
    assert proc.returncode != 0
    assert "batch_size 4 is not divisible by grad_accum 2 x processes 3" in err
    assert "error: [pretrain] a rank failed" in err
