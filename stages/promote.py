"""Stage `promote`: register the aligned model in the MLflow model registry and promote it only if it got better.

Every run logs the aligned model (mlflow.transformers, from the local checkpoint directory) as a new version of
`model_name` with alias `candidate`. The alias `champion` moves to it only when every gate passes:
  - general perplexity: aligned vs the domain model, relative rise at most `max_general_ppl_rise`
  - KL of aligned to SFT on held-out answers at most `max_kl_to_sft`
  - the task's primary metric (task accuracy; chrF for a free-form task) not below the current champion's
    (minus `task_accuracy_tolerance`, in the metric's units); passes when there is none
Gate values, bounds and the outcome go to metrics/promote.json and the report card.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.errors import LifecycleError
from core.io import read_json, write_json

EVALUATION = Path("metrics/evaluate.json")
MODEL_DIR = Path("artifacts/align")
METRICS = Path("metrics/promote.json")
CANDIDATE, CHAMPION = "candidate", "champion"
TASK_TAG = "task"  # the promote run's tag naming the task its model was evaluated on


class Config(StageConfig):
    model_name: str = Field("lifecycle-chat", min_length=1, description="MLflow registered model")
    max_general_ppl_rise: float = Field(gt=0, description="aligned / domain general perplexity - 1, at most")
    max_kl_to_sft: float = Field(gt=0)
    task_accuracy_tolerance: float = Field(0.0, ge=0, description="allowed drop below the champion's accuracy")


def primary_metric(evaluation: dict) -> str:
    return (evaluation.get("task") or {}).get("primary_metric", "task_accuracy")


def gates(cfg: Config, evaluation: dict, champion_accuracy: float | None) -> list[dict]:
    aligned, domain = evaluation["aligned"], evaluation["domain"]
    key = primary_metric(evaluation)
    rise = aligned["ppl_general"] / domain["ppl_general"] - 1
    floor = None if champion_accuracy is None else champion_accuracy - cfg.task_accuracy_tolerance
    return [
        {"name": "general_ppl_rise_vs_domain", "value": rise, "bound": cfg.max_general_ppl_rise,
         "passed": rise <= cfg.max_general_ppl_rise},
        {"name": "kl_to_sft", "value": aligned["kl_to_sft"], "bound": cfg.max_kl_to_sft,
         "passed": aligned["kl_to_sft"] <= cfg.max_kl_to_sft},
        {"name": f"{key}_vs_champion", "value": aligned[key], "bound": floor,
         "passed": floor is None or aligned[key] >= floor - 1e-9},
    ]


def task_name(evaluation: dict) -> str:
    return (evaluation.get("task") or {}).get("name", "sentiment")


def champion_accuracy(client, name: str, key: str = "task_accuracy", task: str = "sentiment") -> float | None:
    """The current champion's held-out primary task metric, from the run that registered it (tagged with its
    task: a champion of another task has no comparable number, even under the same metric name)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model or no champion yet
        return None
    run = client.get_run(version.run_id)
    theirs = run.data.tags.get(TASK_TAG)
    if f"aligned.{key}" not in run.data.metrics or (theirs is not None and theirs != task):
        raise OtherTask(f"the champion of '{name}' (version {version.version}) was evaluated on another task "
                        f"({theirs or 'without aligned.' + key}), so this model ({task}) cannot be compared with it "
                        "(not promoted); register models of this task under another promote.model_name")
    metrics = run.data.metrics
    return metrics[f"aligned.{key}"]


class OtherTask(Exception):
    """The champion was evaluated on another task: the candidate cannot beat a number it was not measured on."""


@contextlib.contextmanager
def hub_offline():
    """MLflow asks the hub for a model card and a license under the model's path; ours is a local directory, and
    on an offline machine those calls retried for minutes. huggingface_hub reads HF_HUB_OFFLINE once, at import, so
    the flag is set on its constants for the call."""
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def run(cfg: Config) -> dict:
    import mlflow
    import torch
    import transformers
    from mlflow import MlflowClient

    evaluation = read_json(EVALUATION)
    if not (MODEL_DIR / "config.json").is_file():
        raise LifecycleError(f"{MODEL_DIR}: no aligned model (run the align stage first)")
    if not tracking.active():
        raise LifecycleError("promote needs an MLflow run (run it through `lifecycle run` or `dvc repro`)")
    client = MlflowClient()
    try:
        best, other_task = champion_accuracy(client, cfg.model_name, primary_metric(evaluation),
                                             task_name(evaluation)), None
    except OtherTask as exc:
        best, other_task = None, str(exc)
    results = gates(cfg, evaluation, best)
    if other_task:
        results[-1].update(passed=False, note=other_task)
        print(f"[promote] {other_task}", flush=True)
    promoted = all(g["passed"] for g in results)
    tracking.log_metrics({f"aligned.{k}": v for k, v in evaluation["aligned"].items()})
    mlflow.set_tag(TASK_TAG, task_name(evaluation))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # components, not the checkpoint path: MLflow 3.17's path branch breaks on transformers 5's task registry
    components = {"model": AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), dtype=torch.float32),
                  "tokenizer": AutoTokenizer.from_pretrained(str(MODEL_DIR))}
    with hub_offline():
        info = mlflow.transformers.log_model(
            transformers_model=components, task="text-generation", name="model",
            registered_model_name=cfg.model_name,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"])
    version = str(info.registered_model_version)
    client.set_registered_model_alias(cfg.model_name, CANDIDATE, version)
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    summary = {"model": cfg.model_name, "version": version, "promoted": promoted, "champion_task_accuracy": best,
               "gates": results}
    write_json(METRICS, summary)
    print(f"[promote] {cfg.model_name} v{version}: " + ("champion" if promoted else "candidate only (" + ", ".join(
        g["name"] for g in results if not g["passed"]) + " failed)"), flush=True)
    return {"promoted": float(promoted), **{f"gate.{g['name']}": float(g["passed"]) for g in results}}


def main() -> None:
    from core.stage import stage_main

    stage_main("promote", Config, run)


if __name__ == "__main__":
    main()
