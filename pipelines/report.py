"""The report card: every model and stage on one page (reports/report.md)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from pydantic import Field

from core.config import StageConfig, read_params

REPORT = Path("reports/report.md")
MODELS = ["base", "domain", "sft", "aligned"]
PLOTS = ["pretrain_loss.png", "domain_loss.png", "sft_loss.png", "reward_curves.png", "align_curves.png",
         "align_overopt/proxy_gold_vs_kl.png"]  # ppo and grpo only


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "" if v is None else str(v)


def headline(stage: str, m: dict) -> str:
    picks = {
        "clean": lambda: (f"docs {m['docs_in']} -> {m['docs_out']}; duplicates exact "
                          f"{sum(m[c]['exact_duplicates'] for c in ('general', 'domain'))}, near "
                          f"{sum(m[c]['near_duplicates'] for c in ('general', 'domain'))}; "
                          f"bad input records {m.get('input_problems', 0)}"),
        "tokenizer": lambda: f"vocab {m['vocab_size']}, {m['bytes_per_token_general']:.2f} bytes/token (general)",
        "pretrain": lambda: f"{m['params']:,} params, val ppl {m['val_ppl']:.3f}",
        "domain": lambda: (f"{m['mode']}: ppl_domain {m['ppl_domain_before']:.4g} -> {m['ppl_domain_after']:.4g}, "
                           f"forgetting {m['forgetting']:+.1%}"),
        "sft": lambda: (f"loss {m['final_loss']:.3f}, trainable {m['trainable_share']:.1%}, general ppl "
                        f"x{m['ppl_general_ratio']:.2f}"),
        "reward": lambda: f"held-out pairwise accuracy {m['accuracy']:.3f}",
        "align": lambda: f"method {m['method']}",
        "evaluate": lambda: (f"gold score sft {m['sft']['gold_score']:.3f} -> aligned {m['aligned']['gold_score']:.3f}, "
                             f"KL {m['aligned']['kl_to_sft']:.2f} +- {m['aligned']['kl_to_sft_se']:.2f}"),
        "promote": lambda: f"{m['model']} v{m['version']}: {'champion' if m['promoted'] else 'candidate only'}",
    }
    try:
        return picks[stage]()
    except (KeyError, TypeError):
        return ""


class Bounds(StageConfig):
    """params.yaml `report`: the bound each check holds a model to (why each value, in params.yaml)."""
    max_domain_forgetting: float = Field(0.15, ge=0, description="domain / base general perplexity - 1, at most")
    max_ppl_rise: float = Field(0.25, ge=0, description=(
        "sft and aligned general and domain perplexity / the domain model's - 1, at most"))
    min_sft_gain: float = Field(0.20, description="sft task accuracy - domain's, at least (checkable tasks)")
    min_reward_accuracy: float = Field(0.8, ge=0, le=1, description="reward model held-out pairwise accuracy")
    max_accuracy_drop: float = Field(0.02, ge=0, description=(
        "sft task accuracy - aligned's, at most (free-form: the primary metric, in its units x 100)"))


def checks(ev: dict, reward: dict, bounds: Bounds | None = None) -> list[tuple[str, bool, str]]:
    """The lifecycle's promises on held-out data, each with the numbers behind it."""
    bounds = bounds or Bounds()
    out = []
    try:
        b, d, s, a = (ev[k] for k in MODELS)
    except KeyError:
        return out
    out.append(("domain lowers held-out domain perplexity", d["ppl_domain"] < b["ppl_domain"],
                f"{b['ppl_domain']:.4g} -> {d['ppl_domain']:.4g}"))
    rise = d["ppl_general"] / b["ppl_general"] - 1
    out.append((f"domain general perplexity rises at most {bounds.max_domain_forgetting:.0%}",
                rise <= bounds.max_domain_forgetting, f"{rise:+.1%}"))
    # instruction tuning and alignment must keep the language model the domain stage built
    for name, model in (("sft", s), ("aligned", a)):
        for corpus in ("general", "domain"):
            key = f"ppl_{corpus}"
            if key in model and key in d:
                rise = model[key] / d[key] - 1
                out.append((f"{name} {corpus} perplexity within {bounds.max_ppl_rise:.0%} of domain's",
                            rise <= bounds.max_ppl_rise, f"{d[key]:.4g} -> {model[key]:.4g} ({rise:+.1%})"))
    # the task decides what an answer's score is (metrics/evaluate.json `task`): accuracy where answers are right
    # or wrong, reference overlap (chrF, 0-100) where they are free-form
    task = ev.get("task") or {"name": "sentiment", "checkable": True, "primary_metric": "task_accuracy"}
    key = task["primary_metric"]
    if task["checkable"]:
        gain = s[key] - d[key]
        out.append((f"sft task accuracy >= domain + {bounds.min_sft_gain * 100:.0f} points",
                    gain >= bounds.min_sft_gain, f"{d[key]:.3f} -> {s[key]:.3f}"))
    else:
        out.append((f"sft {key} beats domain's ({task['name']} task: no accuracy)", s[key] > d[key],
                    f"{d[key]:.4g} -> {s[key]:.4g}"))
    if reward:
        ceiling = f", gold rule's agreement with the labels {reward['gold_agreement']:.3f}" \
            if "gold_agreement" in reward else ""
        out.append((f"reward model held-out accuracy >= {bounds.min_reward_accuracy}",
                    reward["accuracy"] >= bounds.min_reward_accuracy, f"{reward['accuracy']:.3f}{ceiling}"))
    # judged by gold (the task's gold rule or verifiable reward), never by the reward model alignment optimised
    if "gold_score_ci" in a and "gold_score" in s:
        low, high = a["gold_score_ci"]
        out.append(("aligned gold score beats sft's beyond its 95 % interval", low > s["gold_score"],
                    f"{s['gold_score']:.3f} -> {a['gold_score']:.3f} [{low:.3f}, {high:.3f}]"))
    drift = a[key] - s[key]
    if task["checkable"]:
        out.append((f"aligned task accuracy within {bounds.max_accuracy_drop * 100:.0f} points of sft",
                    drift >= -bounds.max_accuracy_drop, f"{drift:+.3f}"))
    else:
        out.append((f"aligned {key} within {bounds.max_accuracy_drop * 100:.0f} points of sft",
                    drift >= -bounds.max_accuracy_drop * 100, f"{drift:+.3g}"))
    return out


def read_bounds(params_file: Path = Path("params.yaml")) -> Bounds:
    params = read_params(params_file) if params_file.exists() else {}
    return Bounds.model_validate(params.get("report") or {})


LM_COLUMNS = ["ppl_general", "ppl_domain", "bpb_general", "bpb_domain"]
# the columns a task's metrics may fill (tasks/): only those some model has are shown
ANSWER_COLUMNS = ["task_accuracy", "answer_rate", "justified_share", "concise_share", "exact_match", "chrf",
                  "rouge_l", "bleu", "gold_score", "gold_score_ci", "reward_score", "reference_logprob", "distinct_1",
                  "distinct_2", "win_rate_vs_sft", "kl_to_sft", "kl_to_sft_se"]
PACKAGES = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "datatrove", "prefect", "mlflow", "dvc"]
SAMPLES = Path("artifacts/evaluate/samples.jsonl")


def stage_order() -> list[str]:
    from ruamel.yaml import YAML

    path = Path("dvc.yaml")
    return list((YAML(typ="safe").load(path.read_text()) or {}).get("stages") or {}) if path.exists() else []


def environment() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return [f"- python {platform.python_version()} on {platform.platform()} ({os.cpu_count()} CPUs), device: {device}",
            "- " + ", ".join(f"{p} {v(p)}" for p in PACKAGES)]


def data_hashes(lock_path: Path = Path("dvc.lock")) -> list[tuple[str, str]]:
    """(path, md5) of the pipeline's raw inputs and the cleaned corpus, as dvc.lock recorded them."""
    from ruamel.yaml import YAML

    if not lock_path.exists():
        return []
    clean = ((YAML(typ="safe").load(lock_path.read_text()) or {}).get("stages") or {}).get("clean") or {}
    rows = [(d["path"], d.get("md5", "")) for d in clean.get("deps", []) if not d["path"].endswith(".py")]
    return rows + [(o["path"], o.get("md5", "")) for o in clean.get("outs", [])]


def _table(columns: list[str], rows: list[list[object]]) -> list[str]:
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows])


def _cell(text: object, limit: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sample_table(n: int = 5) -> list[str]:
    if not SAMPLES.exists():
        return []
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:n]]
    return _table(["prompt", "reference", *MODELS], [[_cell(r["prompt"]), _cell(r["reference"], 40),
                                                       *(_cell(r.get(m, ""), 40) for m in MODELS)] for r in rows])


def remote_code_keys(params_file: Path = Path("params.yaml")) -> list[str]:
    """The params keys that turn on trust_remote_code (flagged at the top of the report)."""
    from core.config import read_params
    from core.tracking import flatten

    if not params_file.exists():
        return []
    return sorted(k for k, v in flatten(read_params(params_file)).items()
                  if k.rsplit(".", 1)[-1] == "trust_remote_code" and v is True)


def render() -> str:
    timings = _load(Path("reports/timings.json"))
    ev = _load(Path("metrics/evaluate.json"))
    reward = _load(Path("metrics/reward.json"))
    promotion = _load(Path("metrics/promote.json"))
    lines = ["# Lifecycle report card", ""]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines += [f"- git commit: `{commit or 'unknown'}`", *environment()]
    if timings.get("overrides"):
        lines.append(f"- overrides: `{timings['overrides']}`")
    remote_code = remote_code_keys()
    if remote_code:
        lines += ["", f"> **Warning: `trust_remote_code` is on** ({', '.join(remote_code)}): Python code shipped with "
                  "a checkpoint ran in this pipeline. Turn it on only for checkpoints whose code you have read."]
    hashes = data_hashes()
    if hashes:
        lines += ["", "## Data", "", *_table(["path", "md5 (dvc.lock)"], [[p, f"`{h}`"] for p, h in hashes])]
    columns = [c for c in ANSWER_COLUMNS if any(c in ev.get(n, {}) for n in MODELS)]
    lines += ["", "## Models (held-out data)", "", "Language modelling (bits per byte compare across tokenizers):", "",
              *_table(["model", *LM_COLUMNS], [[n, *(ev.get(n, {}).get(c) for c in LM_COLUMNS)] for n in MODELS]),
              "", f"Answers to held-out task prompts (greedy; task `{(ev.get('task') or {}).get('name', '?')}`):", "",
              *_table(["model", *columns], [[n, *(ev.get(n, {}).get(c) for c in columns)] for n in MODELS])]
    results = checks(ev, reward, read_bounds())
    if results:
        lines += ["", "## Checks", ""] + [f"- [{'x' if ok else ' '}] {what}: {detail}" for what, ok, detail in results]
    if promotion:
        lines += ["", "## Promotion", "", f"Registered `{promotion['model']}` version {promotion['version']} as "
                  f"`candidate`; **{'promoted to `champion`' if promotion['promoted'] else 'not promoted'}**.", "",
                  *_table(["gate", "passed", "value", "bound"],
                          [[g["name"], "yes" if g["passed"] else "no", g["value"], g["bound"]]
                           for g in promotion["gates"]])]
    samples = sample_table()
    if samples:
        lines += ["", "## Sample generations", "", *samples]
    by_stage = {r["stage"]: r for r in timings.get("stages", [])}
    lines += ["", "## Stages", "", "| stage | status | wall time (s) | headline |", "|---|---|---|---|"]
    for stage in stage_order():
        t = by_stage.get(stage, {})
        lines.append(f"| {stage} | {t.get('status', '')} | {_fmt(t.get('wall_s'))} | "
                     f"{headline(stage, _load(Path(f'metrics/{stage}.json')))} |")
    if timings:
        lines += ["", f"Flow wall time {timings['flow_wall_s']:.1f} s; stages {timings['flow_wall_s'] - timings['overhead_s']:.1f} s; "
                      f"flow overhead (flow minus stages) {timings['overhead_s']:.1f} s."]
    plots = [p for p in PLOTS if Path("plots", p).exists()]
    if plots:
        lines += ["", "## Curves", ""] + [f"![{p}](../plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report() -> Path:
    from core.io import atomic_file

    with atomic_file(REPORT) as fh:
        fh.write(render())
    return REPORT
