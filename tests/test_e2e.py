"""The whole flow at micro size: Prefect -> DVC -> stages -> MLflow, DPO then PPO."""
import json
import subprocess
import sys

import pytest
from ruamel.yaml import YAML

from tests.micro import copy_project, lifecycle

STAGES = ["clean", "tokenizer", "pretrain", "domain", "sft", "reward", "align", "evaluate", "promote"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, micro_run):
    """A copy of the session's micro run (`lifecycle run --profile micro`, as a user runs it); later runs here."""
    return copy_project(micro_run.root, tmp_path_factory.mktemp("e2e") / "project"), micro_run


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
    assert [s["status"] for s in timings["stages"]] == ["ran"] * len(STAGES)
    assert [s["started"] for s in timings["stages"]] == ["host"] * len(STAGES)  # forked by the run's stage host
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
        for key in ("ppl_general", "ppl_domain", "bpb_general", "bpb_domain", "task_accuracy", "answer_rate",
                    "reward_score", "gold_score", "distinct_1", "distinct_2", "reference_logprob", "justified_share",
                    "concise_share"):
            assert isinstance(ev[model][key], float), (model, key)
        assert 0 <= ev[model]["task_accuracy"] <= ev[model]["answer_rate"] <= 1
        assert "bleu" not in ev[model]  # reference overlap is the free-form task's, not a label's
        assert ev[model]["reference_logprob"] <= 0
        low, high = ev[model]["gold_score_ci"]
        assert low <= ev[model]["gold_score"] <= high
    # the gold score recomputed from the written answers by the rule itself (tests/test_tasks.py pins the rule)
    samples = [json.loads(line) for line in (root / "artifacts" / "evaluate" / "samples.jsonl").open()]
    from tasks import TaskConfig, load_task

    task = load_task(TaskConfig())
    for model in ("sft", "aligned"):
        gold = [task.gold(s[model], s["reference"], [{"role": "user", "content": s["prompt"]}]) for s in samples]
        assert ev[model]["gold_score"] == pytest.approx(sum(gold) / len(gold))
    assert ev["aligned"]["kl_to_sft"] >= 0 and ev["aligned"]["kl_to_sft_se"] >= 0
    reward = json.loads((root / "metrics" / "reward.json").read_text())
    assert 0 <= reward["accuracy"] <= 1
    assert set(reward["accuracy_by_kind"]) <= {"correctness", "justification", "concision", "grounding"}
    sft = json.loads((root / "metrics" / "sft.json").read_text())
    assert sft["ppl_general_ratio"] == pytest.approx(sft["ppl_general"] / sft["ppl_general_before"])
    assert sft["ppl_general_before"] == pytest.approx(ev["domain"]["ppl_general"], rel=1e-4)
    clean = json.loads((root / "metrics" / "clean.json").read_text())
    assert clean["docs_out"] < clean["docs_in"]
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    for stage in ("pretrain", "domain", "sft", "align"):
        AutoModelForCausalLM.from_pretrained(str(root / "artifacts" / stage))
    AutoModelForSequenceClassification.from_pretrained(str(root / "artifacts" / "reward"))
    assert (root / "artifacts" / "sft" / "adapter" / "adapter_config.json").exists()



def test_report_card_holds_every_section_and_its_links_resolve(project):
    import re

    from PIL import Image

    root, _ = project
    report = (root / "reports" / "report.md").read_text()
    for section in ("## Data", "## Models (held-out data)", "## Checks", "## Promotion", "## Sample generations",
                    "## Stages", "## Curves"):
        assert section in report, section
    assert "- git commit: `" in report and "torch 2.13.0" in report and "flow overhead" in report
    assert "| data/clean | `" in report  # data hashes from dvc.lock
    for column in ("bpb_general", "task_accuracy", "answer_rate", "justified_share", "distinct_2", "gold_score",
                   "gold_score_ci", "reference_logprob", "win_rate_vs_sft", "kl_to_sft", "kl_to_sft_se"):
        assert column in report, column
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert len(links) == 5
    for link in links:
        png = (root / "reports" / link).resolve()
        with Image.open(png) as image:  # exists and decodes
            image.load()
            assert image.size[0] > 100 and image.size[1] > 100
    # the gates recomputed here from what evaluate wrote and the bounds in params.yaml (the first version: no
    # champion to beat); promoted only when all three hold
    promotion = json.loads((root / "metrics" / "promote.json").read_text())
    evaluation = json.loads((root / "metrics" / "evaluate.json").read_text())
    bounds = YAML(typ="safe").load((root / "params.yaml").read_text())["promote"]
    aligned = evaluation["aligned"]
    want = {"general_ppl_rise_vs_domain": aligned["ppl_general"] / evaluation["domain"]["ppl_general"] - 1
            <= bounds["max_general_ppl_rise"],
            "kl_to_sft": aligned["kl_to_sft"] <= bounds["max_kl_to_sft"], "task_accuracy_vs_champion": True}
    assert {g["name"]: g["passed"] for g in promotion["gates"]} == want
    assert promotion["version"] == "1" and promotion["promoted"] is all(want.values())


def test_second_repro_is_a_noop(project):
    root, _ = project
    before = (root / "dvc.lock").read_bytes()
    out = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, capture_output=True, text=True, check=True)
    assert "Running stage" not in out.stdout, out.stdout[-2000:]  # no stage command ran (timing: not a test's job)
    assert (root / "dvc.lock").read_bytes() == before


def test_bad_override_fails_cleanly(project):
    root, _ = project
    before = (root / "params.yaml").read_text()
    proc = lifecycle(root, "run", "--set", "sft.lora.rank=4", check=False)
    assert proc.returncode == 2
    assert "unknown key 'sft.lora.rank'" in proc.stderr
    assert (root / "params.yaml").read_text() == before
    # a known key with a value its stage refuses: refused before any server or stage starts, params.yaml untouched
    proc = lifecycle(root, "run", "--set", "sft.steps=abc", check=False)
    assert proc.returncode == 2 and "sft.steps: Input should be a valid integer" in proc.stderr, proc.stderr[-2000:]
    assert "Flow run" not in proc.stdout + proc.stderr  # no flow started
    assert (root / "params.yaml").read_text() == before


def test_grpo_runs_with_the_verifiable_reward(project):
    root, _ = project
    lifecycle(root, "run", "--set", "align.method=grpo", "--set", "align.grpo.reward_model_weight=0.25")
    align = json.loads((root / "metrics" / "align.json").read_text())
    assert align["method"] == "grpo"
    assert {"reward", "kl", "rewards/correct/mean", "rewards/format/mean", "rewards/proxy/mean",
            "rewards/gold/mean", "completions/mean_length"} <= set(align)
    assert align["format_weight"] == 0.5
    # the optimised reward is correct + 0.5 x format + 0.25 x the reward model; gold is logged, weight 0
    assert align["reward"] == pytest.approx(align["rewards/correct/mean"] + 0.5 * align["rewards/format/mean"]
                                            + 0.25 * align["rewards/proxy/mean"], abs=1e-4)
    rows = json.loads((root / "plots" / "align.json").read_text())
    assert [r["step"] for r in rows] == [1, 2]


def test_ppo_is_one_set_away_and_compare_shows_it_beside_the_dpo_run(project):
    """`--set align.method=ppo` reruns align and what follows it only; `lifecycle compare` names the session's DPO
    run and this one by id and shows them side by side, each row checked against that run's own metrics files."""
    root, micro = project
    lifecycle(root, "run", "--set", "align.method=ppo")
    timings = json.loads((root / "reports" / "timings.json").read_text())
    status = {s["stage"]: s["status"] for s in timings["stages"]}
    assert status == {**{s: "skipped" for s in STAGES[:6]}, "align": "ran", "evaluate": "ran", "promote": "ran"}
    align = json.loads((root / "metrics" / "align.json").read_text())
    assert align["method"] == "ppo"
    assert {"objective/kl", "objective/scores", "policy/clipfrac_avg", "loss/value_avg"} <= set(align)
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text())
    assert lock["stages"]["align"]["params"]["params.yaml"]["align"]["method"] == "ppo"
    runs = {"dpo": (micro.root, json.loads((micro.root / "reports" / "timings.json").read_text())),
            "ppo": (root, timings)}
    accuracy = {m: json.loads((r / "metrics" / "evaluate.json").read_text())["aligned"]["task_accuracy"]
                for m, (r, _) in runs.items()}
    ids = [t["mlflow_parent_run_id"] for _, t in runs.values()]
    out = lifecycle(root, "compare", ids[0][:8], ids[1]).stdout
    header, _, first, second = out.splitlines()[:4]
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [dict(zip(columns, (c.strip() for c in row.strip("|").split("|")))) for row in (first, second)]
    assert [r["run"] for r in rows] == [i[:8] for i in ids]
    assert [r["align.method"] for r in rows] == ["dpo", "ppo"]
    assert [r["aligned acc"] for r in rows] == [f"{accuracy['dpo']:.4g}", f"{accuracy['ppo']:.4g}"]
    assert "param(s) differ across these 2 runs" in out
    latest = lifecycle(root, "compare", "--last", "1").stdout.splitlines()[2]  # the newest run: this one
    assert latest.strip("| ").startswith(ids[1][:8])
    missing = lifecycle(root, "compare", "0000000", check=False)
    assert missing.returncode == 2 and "no finished pipeline run '0000000'" in missing.stderr
    curve = root / "plots" / "align_overopt" / "proxy_gold_vs_kl.png"  # proxy and gold against KL, in the card
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](../plots/align_overopt/proxy_gold_vs_kl.png)" in (root / "reports" / "report.md").read_text()


def test_back_to_dpo_shows_no_curve_of_the_method_before(project):
    """DPO samples nothing while it trains, so it draws no over-optimisation curve; going back to it (align restored
    from DVC's run cache, not rerun) must not leave PPO's curve beside DPO's metrics."""
    root, _ = project
    lifecycle(root, "run", "--set", "align.method=dpo")
    assert json.loads((root / "metrics" / "align.json").read_text())["method"] == "dpo"
    assert list((root / "plots" / "align_overopt").iterdir()) == []
    assert "align_overopt" not in (root / "reports" / "report.md").read_text()


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


def test_dvc_metrics_and_plots_compare_across_revisions(project):
    root, _ = project
    git = ["git", "-c", "user.email=t@localhost", "-c", "user.name=t"]
    subprocess.run(git + ["add", "-A"], cwd=root, check=True)
    subprocess.run(git + ["commit", "-qm", "micro run"], cwd=root, check=True)

    def dvc(*args):
        out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    diff = json.loads(dvc("plots", "diff", "HEAD", "--json"))
    assert not diff.get("errors"), diff.get("errors")
    assert any("align" in name for name in diff.get("data", {}))
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(dvc("exp", "show", "--no-pager", "--csv"))))
    committed = next(r for r in rows if r["rev"] in ("main", "master"))
    for metric in ("aligned.task_accuracy", "aligned.answer_rate", "accuracy"):
        float(committed[metric])  # the committed revision has its metrics ('!' when DVC cannot find them)
    assert committed["promoted"] in ("True", "False")
