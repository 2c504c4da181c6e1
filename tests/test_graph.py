"""dvc.yaml's graph as the flow reads it, and params `orchestration`."""
from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from core.config import read_params
from core.errors import ConfigError, LifecycleError
from pipelines import graph
from pipelines.lifecycle import validate_params
from tests.micro import ROOT


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return read_params(ROOT / "params.yaml")


def test_targets_bring_their_upstream_stages_in_dvc_order(in_root):
    assert graph.stages_for(["tokenizer"], in_root) == ["clean", "tokenizer"]
    assert graph.stages_for(["reward"], in_root) == ["clean", "tokenizer", "pretrain", "domain", "sft", "reward"]
    assert graph.stages_for(["pretrain", "clean"], in_root) == ["clean", "tokenizer", "pretrain"]
    assert graph.stages_for([], in_root) == graph.stage_names()
    assert graph.upstream("clean", in_root) == []
    # promote reads evaluate's metrics file (a `metrics:` out) and the aligned model
    assert "evaluate" in graph.upstream("promote", in_root) and "align" in graph.upstream("promote", in_root)
    with pytest.raises(LifecycleError, match="unknown stage 'sftt'"):
        graph.stages_for(["sftt"], in_root)


def test_deps_resolve_params_variables(in_root):
    assert in_root["data"]["general"]["path"] in graph.stage_deps("clean", in_root)
    with pytest.raises(LifecycleError, match="data.general"):
        graph.stage_deps("clean", {"data": {}})


@pytest.mark.parametrize("section, message", [
    ({"gpu_stages": ["pretrian"]}, r"gpu_stages names unknown stage\(s\) \['pretrian'\]"),
    ({"gpu_stages": ["sft"], "gpu_pool": "x"}, "gpu_pool"),
    ({"gpu_stages": "sft"}, "gpu_stages"),
])
def test_orchestration_section_is_validated(in_root, tmp_path, section, message):
    params = dict(in_root, orchestration=section)
    path = tmp_path / "params.yaml"
    YAML().dump(params, path)
    with pytest.raises(ConfigError, match=message):
        validate_params(path)


def test_retries_are_set_per_stage():
    from pipelines.lifecycle import Orchestration, stage_task_for

    orchestration = Orchestration(retries={"pretrain": 2}, retry_delay_s=5)
    assert stage_task_for("pretrain", orchestration).retries == 2
    assert stage_task_for("pretrain", orchestration).retry_delay_seconds == 5
    assert stage_task_for("sft", orchestration).retries == 0
    with pytest.raises(ValueError, match="retries must be >= 0"):
        Orchestration(retries={"sft": -1})
