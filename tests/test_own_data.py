"""A new user's run on data in public formats (issue: own data, own task), through `lifecycle run` as they would.

The project gets a play as `general` (the web preset's Gopher and C4 filters drop verse speeches), a math corpus
as `domain` (worked solutions, through the curated preset), GSM8K-style instructions mapped in params
(`question`/`answer`) and multi-turn hh-rlhf preferences. The
default task (sentiment) does not fit GSM8K, the web preset does not fit a play: each run stops with a message
whose last line is the complete fix, and the run with exactly those arguments gets through `promote`, with the
task accuracy read by numeric extraction. (Broken inputs: tests/test_broken_inputs.py.)
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tasks.numeric import numeric_answer
from tests import public_formats as pf
from tests.micro import MICRO, lifecycle, make_project

INPUTS = ["--set", "data.general={path: in/play.txt}", "--set", "data.domain={path: in/math.jsonl}",
          "--set", "data.instructions={path: in/gsm8k.jsonl, fields: {prompt: question, response: answer}}",
          "--set", "data.preferences={path: in/hh.jsonl}"]


def fix_of(proc: subprocess.CompletedProcess) -> list[str]:
    """The `--set` arguments of the run's last line, which must be a complete `lifecycle run ...` command."""
    last = proc.stderr.strip().splitlines()[-1].strip()
    assert last.startswith("lifecycle run --set "), proc.stderr[-3000:]
    return last.split()[2:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("own-data"))
    pf.math_corpus(root / "in" / "math.jsonl")
    pf.play(root / "in" / "play.txt")
    pf.gsm8k(root / "in" / "gsm8k.jsonl")
    pf.hh_rlhf(root / "in" / "hh.jsonl")
    micro = [a for s in MICRO for a in ("--set", s)]
    runs = []
    # 1. the demo's task cannot read GSM8K references: stopped before any stage ran
    first = lifecycle(root, "run", *INPUTS, *micro, check=False)
    runs.append(first)
    assert first.returncode == 2 and not (root / "dvc.lock").exists(), first.stderr[-3000:]
    # 2. with the fix, the web preset's filters drop most of the play: stopped in clean
    second = lifecycle(root, "run", *fix_of(first), check=False)
    runs.append(second)
    assert second.returncode == 2 and not (root / "data" / "clean").exists(), second.stderr[-3000:]
    # 3. with that fix too, the whole lifecycle
    runs.append(lifecycle(root, "run", *fix_of(second)))
    return root, runs


def params(root: Path) -> dict:
    return YAML(typ="safe").load((root / "params.yaml").read_text())


def test_a_task_that_does_not_fit_stops_the_run_with_the_fix(project):
    root, (first, *_) = project
    err = first.stderr
    assert "in/gsm8k.jsonl: task 'sentiment' reads no answer from" in err
    assert fix_of(first) == ["--set", "task.name=numeric"]


def test_the_drop_guard_names_corpus_filter_reason_share_samples_and_fix(project):
    root, (_, second, _) = project
    err = second.stderr.rsplit("error: stage 'clean' failed", 1)[1]  # the message the run ends with
    assert "corpus 'general' (in/play.txt): " in err and "(web preset)" in err
    assert "Top reason: " in err and "above clean.max_drop_fraction=0.5" in err
    assert err.count("\n    - '") == 2  # two dropped samples
    assert fix_of(second) == ["--set", "clean.preset.general=curated"]


def test_rerun_with_the_fixes_gets_through_promote_with_a_numeric_task(project):
    root, (*_, third) = project
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text())
    assert list(lock["stages"])[-1] == "promote"
    p = params(root)
    assert p["task"]["name"] == "numeric" and p["clean"]["preset"]["general"] == "curated"
    assert p["data"]["instructions"]["fields"] == {"prompt": "question", "response": "answer"}
    clean = json.loads((root / "metrics" / "clean.json").read_text())
    assert clean["general"]["preset"] == clean["domain"]["preset"] == "curated"
    assert not set(clean["general"]["drop_share"]) & {"gopher_quality", "gopher_repetition", "c4", "language"}
    assert clean["preferences"]["input_problems"] == {} and clean["preferences"]["docs_out"] > 100
    # multi-turn hh-rlhf: every turn before the last assistant answer is the prompt
    pair = json.loads((root / "data/clean/preferences.train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "user"]
    ev = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert ev["task"] == {"name": "numeric", "checkable": True, "primary_metric": "task_accuracy",
                          "examples": ev["task"]["examples"]}
    samples = [json.loads(line) for line in (root / "artifacts/evaluate/samples.jsonl").read_text().splitlines()]
    assert len(samples) == ev["task"]["examples"] > 0
    for model in ("base", "domain", "sft", "aligned"):  # recomputed from the written answers, by numeric extraction
        want = sum(numeric_answer(s[model]) == numeric_answer(s["reference"]) for s in samples) / len(samples)
        assert ev[model]["task_accuracy"] == pytest.approx(want), model
        assert "justified_share" not in ev[model] and "bleu" not in ev[model]
    assert all(numeric_answer(s["reference"]) is not None for s in samples)
    report = (root / "reports" / "report.md").read_text()
    assert "task `numeric`" in report and "sft task accuracy >= domain + 20 points" in report
    promote = json.loads((root / "metrics" / "promote.json").read_text())
    assert [g["name"] for g in promote["gates"]][-1] == "task_accuracy_vs_champion"


def test_code_instructions_get_a_free_form_task_with_overlap_metrics_and_no_accuracy(project):
    """Alpaca code instructions: the numeric task cannot read them (the fix names free_form); with it the run
    reports chrF, ROUGE-L, BLEU and exact match, no task accuracy, and the report checks overlap, not accuracy."""
    root, _ = project
    pf.alpaca_code(root / "in" / "code.json")
    refused = lifecycle(root, "run", "--set", "data.instructions={path: in/code.json}", check=False)
    assert refused.returncode == 2 and "in/code.json: task 'numeric' reads no answer from" in refused.stderr
    assert fix_of(refused) == ["--set", "task.name=free_form"]
    lifecycle(root, "run", *fix_of(refused))
    ev = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert ev["task"]["name"] == "free_form" and ev["task"]["primary_metric"] == "chrf"
    samples = [json.loads(line) for line in (root / "artifacts/evaluate/samples.jsonl").read_text().splitlines()]
    from core import metrics as m

    for model in ("base", "domain", "sft", "aligned"):
        assert "task_accuracy" not in ev[model] and "answer_rate" not in ev[model]
        answers, refs = [s[model] for s in samples], [s["reference"] for s in samples]
        assert ev[model]["chrf"] == pytest.approx(m.chrf(answers, refs))
        assert ev[model]["rouge_l"] == pytest.approx(m.rouge_l(answers, refs))
        assert ev[model]["exact_match"] == sum(a.split() == r.split() for a, r in zip(answers, refs)) / len(refs)
    report = (root / "reports" / "report.md").read_text()
    assert "task `free_form`" in report and "sft chrf beats domain's" in report and "task accuracy" not in report
    promote = json.loads((root / "metrics" / "promote.json").read_text())
    assert [g["name"] for g in promote["gates"]][-1] == "chrf_vs_champion"
