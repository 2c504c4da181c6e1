"""The Prefect flow: one task per DVC stage, in dvc.yaml's order, under one MLflow parent run.

Each task runs `dvc repro --single-item <stage>`, so DVC decides whether the stage is stale and an
unchanged stage is skipped, not re-run. dvc.yaml is the one stage graph; this flow follows it.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ruamel.yaml import YAML

from core import tracking
from core.config import apply_overrides, load_section, params_path, read_params
from core.errors import ConfigError, LifecycleError
from core.io import write_json

TIMINGS = Path("reports/timings.json")


def stage_names(dvc_file: Path = Path("dvc.yaml")) -> list[str]:
    stages = YAML(typ="safe").load(dvc_file.read_text(encoding="utf-8")).get("stages") or {}
    return list(stages)


def validate_params(path: Path) -> dict:
    """Check every section against its stage's config before any stage runs."""
    params = read_params(path)
    names = stage_names()
    unknown = sorted(set(params) - set(names) - {"data"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; sections are 'data' and {names}")
    for name in names:
        load_section(name, importlib.import_module(f"stages.{name}").Config, path)
    return params


def _stage_env(parent_run_id: str) -> dict:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # `python` in dvc.yaml is this interpreter
    env[tracking.PARENT_ENV] = parent_run_id
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    return env


def run_dvc_stage(name: str, env: dict) -> dict:
    """Run one DVC stage, streaming its output; report whether DVC ran or skipped it."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    captured = bytearray()
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):
        captured += chunk
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    code = proc.wait()
    text = captured.decode("utf-8", "replace")
    if code != 0:
        tail = "\n".join(line for line in text.splitlines() if line.startswith(("error", "ERROR")))[-2000:]
        raise LifecycleError(f"stage '{name}' failed (exit {code}){': ' + tail if tail else ''}")
    skipped = "didn't change, skipping" in text
    return {"stage": name, "status": "skipped" if skipped else "ran", "wall_s": time.perf_counter() - start}


def build_flow():
    from prefect import flow, task

    stage_task = task(run_dvc_stage, name="dvc-stage", retries=0)

    @flow(name="lifecycle", log_prints=True)
    def lifecycle(overrides: list[str] | None = None) -> dict:
        import mlflow

        start = time.perf_counter()
        path = params_path()
        applied = apply_overrides(path, overrides or [])
        params = validate_params(path)
        from pipelines import sample_data

        defaults = {k: str(sample_data.SAMPLE_DIR / f"{k}.jsonl") for k in ("general", "domain", "instructions",
                                                                             "preferences")}
        if any(params["data"].get(k) == v for k, v in defaults.items()):
            sample_data.ensure()
        exp_id = tracking.setup()
        with mlflow.start_run(experiment_id=exp_id, run_name="lifecycle", tags={"pipeline": "lifecycle"}) as parent:
            mlflow.log_params(tracking.safe_params({"override": applied}) if applied else {"override": "none"})
            mlflow.log_params(tracking.safe_params(params))  # the whole params.yaml: `lifecycle compare` diffs it
            mlflow.set_tag("git_commit", _git_commit())
            env = _stage_env(parent.info.run_id)
            results = [stage_task.with_options(name=f"stage:{name}")(name, env) for name in stage_names()]
            flow_wall = time.perf_counter() - start
            timings = {"stages": results, "flow_wall_s": flow_wall,
                       "overhead_s": flow_wall - sum(r["wall_s"] for r in results), "overrides": applied,
                       "mlflow_parent_run_id": parent.info.run_id}
            write_json(TIMINGS, timings)
            mlflow.log_metrics({"flow_wall_s": flow_wall, "flow_overhead_s": timings["overhead_s"],
                                **{f"wall_s.{r['stage']}": r["wall_s"] for r in results}})
            # every stage's metrics file, also for stages DVC skipped or restored from its run cache (those log no
            # child run): the parent run alone describes the pipeline's current outputs
            for name in stage_names():
                path = Path("metrics") / f"{name}.json"
                if path.exists():
                    mlflow.log_metrics(tracking.numeric_metrics(json.loads(path.read_text()), name))
            from pipelines.report import write_report

            report = write_report()
            mlflow.log_artifact(str(report))
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(markdown=report.read_text(encoding="utf-8"), key="report-card",
                                     description="Lifecycle report card (reports/report.md)")
        return timings

    return lifecycle


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_pipeline(overrides: list[str] | None = None) -> dict:
    return build_flow()(overrides=overrides or [])


if __name__ == "__main__":
    print(json.dumps(run_pipeline(sys.argv[1:]), indent=2))
