"""`lifecycle` command line: run the flow, one stage, the report, or the sample data."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _quiet_defaults() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", os.path.abspath(".prefect"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def main(argv: list[str] | None = None) -> None:
    _quiet_defaults()
    ap = argparse.ArgumentParser(prog="lifecycle", description="LLM lifecycle pipeline (Prefect + DVC + MLflow)")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole flow (unchanged stages are skipped by DVC)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a params.yaml value (written to params.yaml, so DVC and MLflow record it)")
    run.add_argument("--profile", metavar="NAME_OR_FILE",
                     help="apply profiles/NAME.yaml (nested overrides, e.g. the GPU profile `gpu`) before --set")
    run.add_argument("--target", dest="targets", action="append", default=[], metavar="STAGE",
                     help="run only this stage and the stages it depends on (repeatable)")
    serve = sub.add_parser("serve", help="serve the flow as a Prefect deployment on a cron schedule (blocks)")
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (02:00 every night)')
    serve.add_argument("--timezone", default="UTC")
    serve.add_argument("--name", default="scheduled", help="deployment name (default: scheduled)")
    serve.add_argument("--profile", metavar="NAME_OR_FILE", help="profile every scheduled run applies")
    serve.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    serve.add_argument("--target", dest="targets", action="append", default=[], metavar="STAGE")
    server = sub.add_parser("server", help="start a Prefect server and an MLflow server (SQLite stores here)")
    server.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    server.add_argument("--prefect-port", type=int, default=4200)
    server.add_argument("--mlflow-port", type=int, default=5000)
    stage = sub.add_parser("stage", help="run one DVC stage")
    stage.add_argument("name")
    stage.add_argument("--force", action="store_true", help="run even if DVC finds it up to date")
    sub.add_parser("report", help="print the report card")
    compare = sub.add_parser("compare", help="recent pipeline runs side by side from MLflow: differing params, metrics")
    compare.add_argument("runs", nargs="*", help="run ids (or their first 8 characters) to compare, in this order")
    compare.add_argument("--last", type=int, default=5, help="how many recent runs, without run ids (default 5)")
    harness = sub.add_parser("harness", help="lm-evaluation-harness on a local model directory (extra: harness)")
    harness.add_argument("--tasks", required=True, help="comma-separated task names, e.g. lifecycle_sentiment")
    harness.add_argument("--model", default="artifacts/align", help="HF model directory (default artifacts/align)")
    harness.add_argument("--include-path", action="append", default=[], help="a folder of task YAML files")
    harness.add_argument("--limit", type=int, default=None, help="examples per task (default all)")
    harness.add_argument("--batch-size", type=int, default=8)
    harness.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    sub.add_parser("data", help="(re)generate the sample data under data/sample")
    fetch = sub.add_parser("fetch", help="snapshot a Hugging Face hub dataset under data/hub (online) for data:")
    fetch.add_argument("name", help="e.g. openai/gsm8k")
    fetch.add_argument("--subset", default=None, help="the dataset's configuration, e.g. main")
    fetch.add_argument("--split", default="train")
    args = ap.parse_args(argv)

    from core.errors import LifecycleError

    try:
        if args.command == "run":
            from pipelines.lifecycle import run_pipeline
            from pipelines.report import REPORT

            from core.config import profile_overrides

            run_pipeline((profile_overrides(args.profile) if args.profile else []) + args.overrides, args.targets)
            print(REPORT.read_text())
        elif args.command == "serve":
            from prefect.schedules import Cron

            from core.config import profile_overrides
            from pipelines.lifecycle import lifecycle

            overrides = (profile_overrides(args.profile) if args.profile else []) + args.overrides
            lifecycle.serve(name=args.name, schedule=Cron(args.cron, timezone=args.timezone), parameters={"overrides": overrides, "targets": args.targets},
                            limit=1)  # one pipeline run at a time: runs share the workspace
        elif args.command == "server":
            from pipelines.servers import serve_forever

            serve_forever(args.host, args.prefect_port, args.mlflow_port)
        elif args.command == "stage":
            from pipelines.graph import stage_names

            if args.name not in stage_names():
                raise LifecycleError(f"unknown stage '{args.name}'; stages: {', '.join(stage_names())}")
            cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", args.name] + (["--force"] if args.force else [])
            sys.exit(subprocess.call(cmd, env={**os.environ, "LIFECYCLE_PYTHON": sys.executable}))
        elif args.command == "compare":
            from pipelines import compare as comparison

            print(comparison.render(comparison.pipeline_runs(args.last, args.runs)), end="")
        elif args.command == "harness":
            from pipelines import harness as lm_harness

            results = lm_harness.run(Path(args.model), [t for t in args.tasks.split(",") if t],
                                     [Path(p) for p in args.include_path], args.limit, args.batch_size, args.chat)
            print(lm_harness.render(results), end="")
        elif args.command == "report":
            from pipelines.report import render

            print(render())
        elif args.command == "fetch":
            from pipelines.hub import fetch as fetch_dataset

            print(f"saved {fetch_dataset(args.name, args.subset, args.split)}")
        elif args.command == "data":
            from pipelines.sample_data import generate

            for name, path in generate().items():
                print(f"{name}: {path}")
    except LifecycleError as exc:
        import logging

        logging.getLogger("prefect").setLevel(logging.WARNING)  # the error (and its fix) stays the last thing printed
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
