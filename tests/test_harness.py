"""`lifecycle harness`: lm-evaluation-harness on a local model directory with a local YAML task, on CPU."""
import json
import subprocess
import sys

from tests.micro import save_micro_chat_model

TASK = """task: tiny_sentiment
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}\\nAnswer:"
doc_to_choice: ["positive", "negative"]
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def test_harness_scores_a_local_model_on_a_local_yaml_task(tmp_path):
    model = save_micro_chat_model(tmp_path / "model")
    rows = [{"text": f"Review {i}: it {'works' if i % 2 else 'broke'}.", "label": i % 2} for i in range(6)]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_sentiment.yaml").write_text(TASK.format(data=tmp_path / "tiny.jsonl"))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "harness", "--tasks", "tiny_sentiment", "--model",
                          str(model), "--include-path", str(tasks), "--batch-size", "2"],
                         cwd=tmp_path, capture_output=True, text=True, env={**_env(), **env})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| tiny_sentiment | acc,none |" in out.stdout
    saved = json.loads((tmp_path / "reports" / "harness.json").read_text())
    result = saved["results"]["tiny_sentiment"]
    assert result["sample_len"] == 6
    acc = result["acc,none"]  # a share of the 6 reviews, with the binomial standard error of that share
    assert abs(acc * 6 - round(acc * 6)) < 1e-9
    assert abs(result["acc_stderr,none"] - (acc * (1 - acc) / 5) ** 0.5) < 1e-9


def test_unknown_task_is_a_clear_error(tmp_path):
    model = save_micro_chat_model(tmp_path / "model")
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "harness", "--tasks", "no_such_task", "--model",
                          str(model)], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert out.returncode == 2
    assert "unknown harness task(s) ['no_such_task']" in out.stderr and "lifecycle_sentiment" in out.stderr


def _env():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(root)}
