"""The report card: every model and stage on one page (reports/report.md)."""
from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

REPORT = Path("reports/report.md")
STAGES = ["clean", "tokenizer", "pretrain", "domain", "sft", "reward", "align", "evaluate"]
MODELS = ["base", "domain", "sft", "aligned"]
PLOTS = ["pretrain_loss.png", "domain_loss.png", "sft_loss.png", "reward_curves.png", "align_curves.png"]


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
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
        "sft": lambda: f"loss {m['final_loss']:.3f}, trainable {m['trainable_share']:.1%}",
        "reward": lambda: f"held-out pairwise accuracy {m['accuracy']:.3f}",
        "align": lambda: f"method {m['method']}",
        "evaluate": lambda: f"aligned win rate vs sft {m['aligned']['win_rate_vs_sft']:.2f}",
    }
    try:
        return picks[stage]()
    except (KeyError, TypeError):
        return ""


def checks(ev: dict, reward: dict, align: dict | None = None) -> list[tuple[str, bool, str]]:
    """The lifecycle's promises on held-out data, each with the numbers behind it."""
    out = []
    try:
        b, d, s, a = (ev[k] for k in MODELS)
    except KeyError:
        return out
    out.append(("domain lowers held-out domain perplexity", d["ppl_domain"] < b["ppl_domain"],
                f"{b['ppl_domain']:.4g} -> {d['ppl_domain']:.4g}"))
    rise = d["ppl_general"] / b["ppl_general"] - 1
    out.append(("general perplexity rises at most 15 %", rise <= 0.15, f"{rise:+.1%}"))
    gain = s["task_accuracy"] - d["task_accuracy"]
    out.append(("sft task accuracy >= domain + 20 points", gain >= 0.20,
                f"{d['task_accuracy']:.3f} -> {s['task_accuracy']:.3f}"))
    if reward:
        out.append(("reward model held-out accuracy >= 0.85", reward["accuracy"] >= 0.85, f"{reward['accuracy']:.3f}"))
    if (align or {}).get("method") == "grpo":  # GRPO optimises the verifiable reward, not the reward model's
        w = align.get("format_weight", 0.0)
        before, after = (m["task_accuracy"] + w * m.get("sentence_share", 0.0) for m in (s, a))
        out.append(("aligned verifiable reward (correct + format) beats sft", after > before,
                    f"{before:.3f} -> {after:.3f}"))
    else:
        out.append(("aligned reward score beats sft", a["reward_score"] > s["reward_score"],
                    f"{s['reward_score']:.3f} -> {a['reward_score']:.3f}"))
    drift = a["task_accuracy"] - s["task_accuracy"]
    out.append(("aligned task accuracy within 2 points of sft", drift >= -0.02, f"{drift:+.3f}"))
    return out


def render() -> str:
    timings = _load(Path("reports/timings.json"))
    ev = _load(Path("metrics/evaluate.json"))
    reward = _load(Path("metrics/reward.json"))
    lines = ["# Lifecycle report card", ""]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines += [f"- git commit: `{commit or 'unknown'}`", f"- python {platform.python_version()} on {platform.machine()}"]
    if timings.get("overrides"):
        lines.append(f"- overrides: `{timings['overrides']}`")
    lines += ["", "## Models (held-out data)", "",
              "| model | ppl_general | ppl_domain | task_accuracy | sentence_share | reward_score | kl_to_sft |",
              "|---|---|---|---|---|---|---|"]
    for name in MODELS:
        m = ev.get(name, {})
        lines.append(f"| {name} | {_fmt(m.get('ppl_general'))} | {_fmt(m.get('ppl_domain'))} | "
                     f"{_fmt(m.get('task_accuracy'))} | {_fmt(m.get('sentence_share'))} | {_fmt(m.get('reward_score'))} | "
                     f"{_fmt(m.get('kl_to_sft'))} |")
    results = checks(ev, reward, _load(Path("metrics/align.json")))
    if results:
        lines += ["", "## Checks", ""] + [f"- [{'x' if ok else ' '}] {what}: {detail}" for what, ok, detail in results]
    by_stage = {r["stage"]: r for r in timings.get("stages", [])}
    lines += ["", "## Stages", "", "| stage | status | wall time (s) | headline |", "|---|---|---|---|"]
    for stage in STAGES:
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
