"""The report card's checks: which promise each alignment method is held to."""
from pipelines.report import checks

EV = {"base": {"ppl_domain": 100.0, "ppl_general": 3.0, "task_accuracy": 0.0},
      "domain": {"ppl_domain": 3.0, "ppl_general": 3.1, "task_accuracy": 0.0},
      "sft": {"task_accuracy": 1.0, "sentence_share": 0.0, "reward_score": 0.5},
      "aligned": {"task_accuracy": 1.0, "sentence_share": 0.9, "reward_score": 0.4}}


def _by_name(results):
    return {what: ok for what, ok, _ in results}


def test_dpo_and_ppo_are_held_to_the_reward_model_score():
    results = _by_name(checks(EV, {"accuracy": 0.95}, {"method": "dpo"}))
    assert results["aligned reward score beats sft"] is False  # 0.5 -> 0.4
    assert results["sft task accuracy >= domain + 20 points"] is True
    assert results["reward model held-out accuracy >= 0.85"] is True


def test_grpo_is_held_to_its_verifiable_reward():
    results = _by_name(checks(EV, {"accuracy": 0.95}, {"method": "grpo", "format_weight": 0.5}))
    assert results["aligned verifiable reward (task + format) beats sft"] is True  # 1.0 -> 1.45
    assert "aligned reward score beats sft" not in results
    worse = {**EV, "aligned": {**EV["aligned"], "task_accuracy": 0.5}}  # 1.0 -> 0.95
    assert _by_name(checks(worse, {}, {"method": "grpo", "format_weight": 0.5}))[
        "aligned verifiable reward (task + format) beats sft"] is False


def test_trust_remote_code_is_flagged_at_the_top_of_the_report(tmp_path, monkeypatch):
    import shutil

    from pipelines import report
    from tests.micro import ROOT

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert report.remote_code_keys() == [] and "trust_remote_code" not in report.render()
    text = (tmp_path / "params.yaml").read_text().replace("trust_remote_code: false", "trust_remote_code: true")
    (tmp_path / "params.yaml").write_text(text)
    assert report.remote_code_keys() == ["pretrain.trust_remote_code"]
    head = report.render().split("## ", 1)[0]
    assert "Warning: `trust_remote_code` is on** (pretrain.trust_remote_code)" in head


def test_checks_follow_a_free_form_task():
    """A free-form task has no accuracy: the report holds SFT and alignment to its reference overlap (chrF)."""
    ev = {"base": {"ppl_domain": 100.0, "ppl_general": 3.0, "chrf": 5.0},
          "domain": {"ppl_domain": 3.0, "ppl_general": 3.1, "chrf": 10.0},
          "sft": {"chrf": 30.0, "reward_score": 0.5}, "aligned": {"chrf": 27.0, "reward_score": 0.6},
          "task": {"name": "free_form", "checkable": False, "primary_metric": "chrf"}}
    results = _by_name(checks(ev, {"accuracy": 0.95}, {"method": "dpo"}))
    assert not any("accuracy >=" in what and "sft task" in what for what in results)
    assert results["sft chrf beats domain's (free_form task: no accuracy)"] is True
    assert results["aligned chrf within 2 points of sft"] is False  # 30 -> 27
    close = {**ev, "aligned": {"chrf": 29.0, "reward_score": 0.6}}
    assert _by_name(checks(close, {}, {"method": "dpo"}))["aligned chrf within 2 points of sft"] is True
