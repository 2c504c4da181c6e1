"""The whole flow at micro size: Prefect -> DVC -> stages -> MLflow, DPO then PPO."""
import json
import subprocess
import sys
import time

import pytest
from ruamel.yaml import YAML

from tests.micro import MICRO, lifecycle, make_project

STAGES = ["clean", "tokenizer", "pretrain", "domain", "sft", "reward", "align", "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("e2e"))
    sets = [a for s in MICRO for a in ("--set", s)]
    first = lifecycle(root, "run", *sets)
    return root, first


def children(root, parent_id):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["lifecycle"], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              output_format="list")
    return {r.data.tags["stage"]: r for r in runs}


def test_flow_runs_every_stage_and_logs_to_mlflow(project):
    root, first = project
    assert "# Lifecycle report card" in first.stdout
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    timings = json.loads((root / "reports" / "timings.json").read_text())
    assert [s["status"] for s in timings["stages"]] == ["ran"] * 8
    assert timings["overhead_s"] >= 0
    runs = children(root, timings["mlflow_parent_run_id"])
    assert sorted(runs) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert "pretrain.train.steps" in runs["pretrain"].data.params
    assert "loss" in runs["pretrain"].data.metrics and "accuracy" in runs["reward"].data.metrics
    # overrides are recorded in params.yaml, hence in dvc.lock
    assert lock["stages"]["pretrain"]["params"]["params.yaml"]["pretrain"]["train"]["steps"] == 4


def test_outputs_and_metrics(project):
    root, _ = project
    for stage in STAGES:
        assert (root / "metrics" / f"{stage}.json").exists(), stage
    ev = json.loads((root / "metrics" / "evaluate.json").read_text())
    for model in ("base", "domain", "sft", "aligned"):
        for key in ("ppl_general", "ppl_domain", "task_accuracy", "reward_score"):
            assert isinstance(ev[model][key], float), (model, key)
        assert 0 <= ev[model]["task_accuracy"] <= 1
    assert ev["aligned"]["kl_to_sft"] >= 0
    assert 0 <= json.loads((root / "metrics" / "reward.json").read_text())["accuracy"] <= 1
    clean = json.loads((root / "metrics" / "clean.json").read_text())
    assert clean["docs_out"] < clean["docs_in"]
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    for stage in ("pretrain", "domain", "sft", "align"):
        AutoModelForCausalLM.from_pretrained(str(root / "artifacts" / stage))
    AutoModelForSequenceClassification.from_pretrained(str(root / "artifacts" / "reward"))
    assert (root / "artifacts" / "sft" / "adapter" / "adapter_config.json").exists()
    report = (root / "reports" / "report.md").read_text()
    assert "| aligned |" in report and "flow overhead" in report


def test_second_repro_is_a_noop(project):
    root, _ = project
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, capture_output=True, text=True, check=True)
    assert "didn't change" in out.stdout or "up to date" in out.stdout.lower()
    assert "Running stage" not in out.stdout
    assert time.perf_counter() - start < 30  # generous for CI; the demo's is reported in the notes


def test_ppo_is_one_set_away_and_only_reruns_what_changed(project):
    root, _ = project
    lifecycle(root, "run", "--set", "align.method=ppo")
    timings = json.loads((root / "reports" / "timings.json").read_text())
    status = {s["stage"]: s["status"] for s in timings["stages"]}
    assert status == {**{s: "skipped" for s in STAGES[:6]}, "align": "ran", "evaluate": "ran"}
    align = json.loads((root / "metrics" / "align.json").read_text())
    assert align["method"] == "ppo"
    assert {"objective/kl", "objective/scores", "policy/clipfrac_avg", "loss/value_avg"} <= set(align)
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text())
    assert lock["stages"]["align"]["params"]["params.yaml"]["align"]["method"] == "ppo"


def test_bad_override_fails_cleanly(project):
    root, _ = project
    before = (root / "params.yaml").read_text()
    proc = lifecycle(root, "run", "--set", "sft.lora.rank=4", check=False)
    assert proc.returncode == 2
    assert "unknown key 'sft.lora.rank'" in proc.stderr
    assert (root / "params.yaml").read_text() == before


def test_grpo_runs_with_the_verifiable_reward(project):
    root, _ = project
    lifecycle(root, "run", "--set", "align.method=grpo")
    align = json.loads((root / "metrics" / "align.json").read_text())
    assert align["method"] == "grpo"
    assert {"reward", "kl", "rewards/correct/mean", "rewards/sentence/mean", "completions/mean_length"} <= set(align)
    assert align["format_weight"] == 0.5
    assert 0.0 <= align["reward"] <= 1.5
    rows = json.loads((root / "plots" / "align.json").read_text())
    assert [r["step"] for r in rows] == [1, 2]


def test_lora_reward_model_and_ppo_with_value_head_and_lora_policy(project):
    root, _ = project
    lifecycle(root, "run", "--set", "reward.lora={r: 2, alpha: 4}", "--set", "align.method=ppo",
              "--set", "align.ppo.value=head", "--set", "align.ppo.lora={r: 2, alpha: 4, modules_to_save: []}")
    reward = json.loads((root / "metrics" / "reward.json").read_text())
    assert 0 < reward["trainable_share"] < 0.5 and 0 <= reward["accuracy"] <= 1
    align = json.loads((root / "metrics" / "align.json").read_text())
    assert align["method"] == "ppo" and "loss/value_avg" in align
    from safetensors.torch import load_file

    saved = load_file(root / "artifacts" / "align" / "model.safetensors")
    assert not any("lora" in k for k in saved)  # the adapter was merged into the saved policy
