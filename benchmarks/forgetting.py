"""Forgetting under domain continuation: sequential without replay, with replay, and a joint mixture.

    python -m benchmarks.forgetting          # needs the demo's data/clean and artifacts/pretrain (make demo)

Runs the `domain` stage three times from the same pretrained model in scratch folders (the project's own
outputs are untouched) and records general-text perplexity before and after each. Results in
benchmarks/results/forgetting.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "forgetting"
RESULTS = ROOT / "benchmarks" / "results" / "forgetting.json"
VARIANTS = {
    "sequential, no replay": ["domain.mode=sequential", "domain.replay_fraction=0.0"],
    "sequential, replay 0.25": ["domain.mode=sequential", "domain.replay_fraction=0.25"],
    "joint, domain ratio 0.5": ["domain.mode=joint", "domain.domain_ratio=0.5"],
}


def main() -> None:
    from core.config import apply_overrides

    for need in ("data/clean", "data/tokens", "artifacts/tokenizer", "artifacts/pretrain"):
        if not (ROOT / need).exists():
            sys.exit(f"{need} is missing: run `make demo` first")
    rows = {}
    for name, overrides in VARIANTS.items():
        work = WORK / name.replace(" ", "_").replace(",", "")
        shutil.rmtree(work, ignore_errors=True)
        (work / "artifacts").mkdir(parents=True)
        (work / "data").symlink_to(ROOT / "data")
        for artifact in ("tokenizer", "pretrain"):
            (work / "artifacts" / artifact).symlink_to(ROOT / "artifacts" / artifact)
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        apply_overrides(work / "params.yaml", overrides)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        subprocess.run([sys.executable, "-m", "stages.domain"], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m = json.loads((work / "metrics" / "domain.json").read_text())
        rows[name] = {k: m[k] for k in ("general_share", "ppl_general_before", "ppl_general_after", "forgetting",
                                        "ppl_domain_before", "ppl_domain_after")}
        print(f"{name:<26} forgetting {m['forgetting']:+.2%}  ppl_domain {m['ppl_domain_after']:.3f}", flush=True)
    result = {"command": "python -m benchmarks.forgetting", "variants": rows,
              "note": "forgetting = relative rise of held-out general perplexity over the stage; same pretrained "
                      "model, steps, LR and seed for every variant"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
