"""The report card's checks: which promise each alignment method is held to."""
from pipelines.report import checks

EV = {"base": {"ppl_domain": 100.0, "ppl_general": 3.0, "task_accuracy": 0.0},
      "domain": {"ppl_domain": 3.0, "ppl_general": 3.1, "task_accuracy": 0.0},
      "sft": {"ppl_domain": 3.3, "ppl_general": 3.2, "task_accuracy": 0.8, "gold_score": 0.56, "reward_score": 0.5},
      "aligned": {"ppl_domain": 3.5, "ppl_general": 3.9, "task_accuracy": 0.79, "gold_score": 0.7,
                  "gold_score_ci": [0.62, 0.78], "reward_score": 0.4}}


def _by_name(results):
    return {what: ok for what, ok, _ in results}


def test_checks_hold_each_model_to_its_bound():
    results = _by_name(checks(EV, {"accuracy": 0.85, "gold_agreement": 0.95}))
    assert results["sft task accuracy >= domain + 20 points"] is True
    assert results["reward model held-out accuracy >= 0.8"] is True
    assert results["sft general perplexity within 25% of domain's"] is True  # 3.1 -> 3.2
    assert results["aligned general perplexity within 25% of domain's"] is False  # 3.1 -> 3.9: +26 %
    assert results["aligned domain perplexity within 25% of domain's"] is True
    # judged by gold, not by the reward model it optimised (whose score fell here)
    assert results["aligned gold score beats sft's beyond its 95 % interval"] is True
    assert results["aligned task accuracy within 2 points of sft"] is True


def test_a_gold_gain_inside_the_interval_is_no_gain():
    close = {**EV, "aligned": {**EV["aligned"], "gold_score": 0.6, "gold_score_ci": [0.55, 0.65]}}
    assert _by_name(checks(close, {}))["aligned gold score beats sft's beyond its 95 % interval"] is False


def test_bounds_come_from_params(tmp_path):
    from pipelines.report import read_bounds

    (tmp_path / "params.yaml").write_text("report: {max_ppl_rise: 0.3, min_reward_accuracy: 0.9}\n")
    bounds = read_bounds(tmp_path / "params.yaml")
    results = _by_name(checks(EV, {"accuracy": 0.85}, bounds))
    assert results["aligned general perplexity within 30% of domain's"] is True
    assert results["reward model held-out accuracy >= 0.9"] is False


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
          "sft": {"chrf": 30.0, "gold_score": 0.3}, "aligned": {"chrf": 27.0, "gold_score": 0.35,
                                                                 "gold_score_ci": [0.31, 0.39]},
          "task": {"name": "free_form", "checkable": False, "primary_metric": "chrf"}}
    results = _by_name(checks(ev, {"accuracy": 0.95}))
    assert not any("accuracy >=" in what and "sft task" in what for what in results)
    assert results["sft chrf beats domain's (free_form task: no accuracy)"] is True
    assert results["aligned chrf within 2 points of sft"] is False  # 30 -> 27
    assert results["aligned gold score beats sft's beyond its 95 % interval"] is True
    close = {**ev, "aligned": {**ev["aligned"], "chrf": 29.0}}
    assert _by_name(checks(close, {}))["aligned chrf within 2 points of sft"] is True
