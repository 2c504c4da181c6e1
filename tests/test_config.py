from pathlib import Path

import pytest
from ruamel.yaml import YAML

from core.config import apply_overrides, load_section
from core.errors import ConfigError
from stages import clean, sft


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sft:\n  steps: 3\n  lora: {r: 4, bogus: 1}\n")
    with pytest.raises(ConfigError, match=r"sft\.lora\.bogus: unknown key"):
        load_section("sft", sft.Config, p)


def test_wrong_type_and_range_are_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sft:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"sft\.steps: .*got 'many'"):
        load_section("sft", sft.Config, p)
    p.write_text("sft:\n  steps: 3\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"sft\.lr: .*greater than 0"):
        load_section("sft", sft.Config, p)


def test_included_top_level_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data: {general: g, domain: d, instructions: i, preferences: p}\nclean: {c4: {min_num_sentences: 3}}\n")
    cfg = load_section("clean", clean.Config, p)
    assert cfg.data.general.path == "g" and cfg.c4.min_num_sentences == 3
    p.write_text("data: {general: g, domain: d, instructions: i}\nclean: {}\n")
    with pytest.raises(ConfigError, match=r"data\.preferences: Field required"):
        load_section("clean", clean.Config, p)


def test_overrides_keep_comments_and_reject_unknown_keys(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("# top comment\nalign:\n  method: dpo  # dpo | ppo\n  ppo: {steps: 2}\n")
    applied = apply_overrides(p, ["align.method=ppo", "align.ppo.steps=5"])
    assert applied == {"align.method": "ppo", "align.ppo.steps": 5}
    text = p.read_text()
    assert "# top comment" in text and "method: ppo" in text and "steps: 5" in text
    with pytest.raises(ConfigError, match="unknown key 'align.mthod'"):
        apply_overrides(p, ["align.mthod=ppo"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides(p, ["align.method"])


def test_override_of_the_project_params_changes_only_its_line(tmp_path):
    from tests.micro import ROOT

    p = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    p.write_text(original)
    apply_overrides(p, ["align.dpo.lr=0.001", "pretrain.init_from=null"])
    changed = [(a, b) for a, b in zip(original.splitlines(), p.read_text().splitlines()) if a != b]
    assert len(original.splitlines()) == len(p.read_text().splitlines())
    assert len(changed) == 1 and "lr: 0.001" in changed[0][1]


def test_a_bare_data_path_becomes_a_mapping_and_a_misfit_task_stops_the_flow(tmp_path):
    """`--set data.instructions=path` is written back as {path: ...} (dvc.yaml tracks data.<input>.path), and the
    flow's pre-flight refuses a task that cannot read the instructions before any stage runs."""
    import json as _json

    from core.config import apply_overrides
    from pipelines.lifecycle import data_as_mappings, preflight_task
    from tasks import TaskMismatch

    src = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(src)
    apply_overrides(p, ["data.instructions=in/q.jsonl"])
    assert data_as_mappings(p) == ['data.instructions={"path": "in/q.jsonl"}']
    apply_overrides(p, data_as_mappings(p))
    params = YAML(typ="safe").load(p.read_text())
    assert params["data"]["instructions"] == {"path": "in/q.jsonl"} and data_as_mappings(p) == []
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "q.jsonl").write_text("".join(_json.dumps({"instruction": f"Add {i} and {i}.",
                                                                  "output": f"#### {2 * i}"}) + "\n"
                                                     for i in range(12)))
    params["data"]["instructions"]["path"] = str(tmp_path / "in" / "q.jsonl")
    with pytest.raises(TaskMismatch, match="task.name=numeric"):
        preflight_task(params)
    preflight_task({**params, "task": {"name": "numeric"}})
    params["data"]["instructions"]["path"] = str(tmp_path / "missing.jsonl")
    preflight_task(params)  # an unreadable input is left to the clean stage, which reports it in full


def test_checking_params_imports_no_torch_transformers_or_trl():
    """`lifecycle run` imports every stage's Config to check params.yaml before anything starts: a stage module
    that imports torch (or transformers, TRL) at its top makes every refusal wait seconds for it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import sys\nfrom pathlib import Path\nfrom pipelines.lifecycle import validate_params\n"
            "validate_params(Path('params.yaml'))\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
