"""`lifecycle harness`: EleutherAI's lm-evaluation-harness on a local model directory (optional extra `harness`).

    lifecycle harness --tasks lifecycle_sentiment                 # the shipped local task (pipelines/harness_tasks)
    lifecycle harness --tasks hellaswag,arc_easy --model artifacts/sft  # the harness's own tasks (download data)

Local YAML tasks are found in pipelines/harness_tasks and in any --include-path. Results go to
reports/harness.json and a top-level MLflow run tagged stage=harness.
"""
from __future__ import annotations

from pathlib import Path

from core import tracking
from core.errors import ConfigError, LifecycleError
from core.io import write_json

LOCAL_TASKS = Path(__file__).resolve().parent / "harness_tasks"
RESULTS = Path("reports/harness.json")


def evaluate(model_dir: Path, tasks: list[str], include_paths: list[Path], limit: int | None, batch_size: int,
             chat: bool, trust_remote_code: bool = False) -> dict:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("lm-evaluation-harness is not installed: pip install -e '.[harness]'") from None
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    manager = TaskManager(include_path=[str(p) for p in [LOCAL_TASKS, *include_paths]])
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"unknown harness task(s) {unknown}; local tasks: "
                          f"{sorted(p.stem for p in LOCAL_TASKS.glob('*.yaml'))}")
    import torch

    model_args = {"pretrained": str(model_dir), "dtype": "float32", "trust_remote_code": trust_remote_code}
    out = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=tasks, limit=limit, batch_size=batch_size,
                                  device="cuda" if torch.cuda.is_available() else "cpu", task_manager=manager,
                                  apply_chat_template=chat, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    if out is None:
        raise LifecycleError("lm-evaluation-harness returned no results")
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            for task, metrics in out["results"].items()}


def run(model_dir: Path, tasks: list[str], include_paths: list[Path], limit: int | None, batch_size: int,
        chat: bool) -> dict:
    import mlflow

    results = evaluate(model_dir, tasks, include_paths, limit, batch_size, chat)
    write_json(RESULTS, {"model": str(model_dir), "tasks": tasks, "limit": limit, "chat": chat, "results": results})
    exp_id = tracking.setup()
    with mlflow.start_run(experiment_id=exp_id, run_name="harness", tags={"stage": "harness"}):
        mlflow.log_params({"model": str(model_dir), "tasks": ",".join(tasks), "limit": limit, "chat": chat})
        mlflow.log_metrics({f"{task}.{k.replace(',', '_')}": v for task, m in results.items() for k, v in m.items()})
        mlflow.log_artifact(str(RESULTS))
    return results


def render(results: dict) -> str:
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, metrics in results.items():
        lines += [f"| {task} | {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
    return "\n".join(lines) + "\n"

