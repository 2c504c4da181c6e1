"""Promotion: the gates on fixed numbers, and the MLflow registry over three runs (better, worse, better)."""
import json

import pytest

from stages import promote
from tests.micro import save_micro_chat_model

EVAL = {"domain": {"ppl_general": 2.0},
        "aligned": {"ppl_general": 2.2, "kl_to_sft": 1.0, "task_accuracy": 0.8}}


def cfg(**kw):
    return promote.Config(**{"max_general_ppl_rise": 0.15, "max_kl_to_sft": 2.0, **kw})


def _passed(results):
    return {g["name"]: g["passed"] for g in results}


def test_gates_on_fixed_numbers():
    assert _passed(promote.gates(cfg(), EVAL, None)) == {
        "general_ppl_rise_vs_domain": True, "kl_to_sft": True, "task_accuracy_vs_champion": True}  # rise 0.10
    worse = {**EVAL, "aligned": {"ppl_general": 2.4, "kl_to_sft": 2.5, "task_accuracy": 0.7}}
    assert _passed(promote.gates(cfg(), worse, 0.8)) == {
        "general_ppl_rise_vs_domain": False, "kl_to_sft": False, "task_accuracy_vs_champion": False}
    assert _passed(promote.gates(cfg(task_accuracy_tolerance=0.1), worse, 0.8))["task_accuracy_vs_champion"]


def test_the_shipped_gate_refuses_a_model_whose_general_perplexity_rose_more_than_25_percent():
    """params.yaml's own promote section, not a test value: a planted evaluation 30 % worse is refused, 20 % passes."""
    from core.config import load_section
    from tests.micro import ROOT

    shipped = load_section("promote", promote.Config, ROOT / "params.yaml")
    assert shipped.max_general_ppl_rise <= 0.25
    planted = {"domain": {"ppl_general": 4.0}, "aligned": {"ppl_general": 5.2, "kl_to_sft": 0.1, "task_accuracy": 0.9}}
    assert _passed(promote.gates(shipped, planted, None))["general_ppl_rise_vs_domain"] is False
    fine = {**planted, "aligned": {**planted["aligned"], "ppl_general": 4.8}}
    assert _passed(promote.gates(shipped, fine, None))["general_ppl_rise_vs_domain"] is True


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A project with a chat model to register. The registry runs in this process, as the stage does: a name lookup
    of any host (MLflow asked the hub for the local model's card and license) fails the test."""
    import socket

    from core import tracking

    looked_up = []

    def no_network(host, *args, **kwargs):
        looked_up.append(host)
        raise OSError(f"test: no network ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    save_micro_chat_model(tmp_path / "artifacts" / "align")
    tracking.setup(tmp_path)
    yield tmp_path
    assert [h for h in looked_up if h not in ("localhost", "127.0.0.1")] == []


def _promote_with(root, accuracy: float) -> dict:
    from core import tracking

    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "evaluate.json").write_text(json.dumps(
        {**EVAL, "aligned": {**EVAL["aligned"], "task_accuracy": accuracy}}))
    with tracking.stage_run("promote", {}):
        promote.run(cfg())
    return json.loads((root / "metrics" / "promote.json").read_text())


def test_registry_promotes_the_better_model_and_refuses_a_worse_one(registry):
    from mlflow import MlflowClient

    client = MlflowClient()
    first = _promote_with(registry, 0.8)
    assert (first["version"], first["promoted"], first["champion_task_accuracy"]) == ("1", True, None)
    worse = _promote_with(registry, 0.7)
    assert (worse["version"], worse["promoted"], worse["champion_task_accuracy"]) == ("2", False, 0.8)
    assert client.get_model_version_by_alias("lifecycle-chat", "champion").version == 1
    assert client.get_model_version_by_alias("lifecycle-chat", "candidate").version == 2
    better = _promote_with(registry, 0.9)
    assert (better["version"], better["promoted"]) == ("3", True)
    assert client.get_model_version_by_alias("lifecycle-chat", "champion").version == 3


def test_a_candidate_evaluated_on_another_task_is_not_promoted_over_the_champion(registry):
    """The champion has task accuracy; a free-form candidate has chrF: no comparison, so no promotion."""
    from core import tracking

    assert _promote_with(registry, 0.8)["promoted"]
    (registry / "metrics" / "evaluate.json").write_text(json.dumps(
        {"domain": {"ppl_general": 2.0}, "aligned": {"ppl_general": 2.0, "kl_to_sft": 1.0, "chrf": 40.0},
         "task": {"name": "free_form", "checkable": False, "primary_metric": "chrf"}}))
    with tracking.stage_run("promote", {}):
        promote.run(cfg())
    result = json.loads((registry / "metrics" / "promote.json").read_text())
    gate = result["gates"][-1]
    assert (result["version"], result["promoted"]) == ("2", False)
    assert gate["name"] == "chrf_vs_champion" and not gate["passed"] and "another task" in gate["note"]
    # the same metric name on another task (numeric vs the sentiment champion) is no comparison either
    (registry / "metrics" / "evaluate.json").write_text(json.dumps(
        {**EVAL, "aligned": {**EVAL["aligned"], "task_accuracy": 0.95},
         "task": {"name": "numeric", "checkable": True, "primary_metric": "task_accuracy"}}))
    with tracking.stage_run("promote", {}):
        promote.run(cfg())
    result = json.loads((registry / "metrics" / "promote.json").read_text())
    assert (result["version"], result["promoted"]) == ("3", False)
    assert "another task (sentiment)" in result["gates"][-1]["note"]
