"""The clean stage's guards: an input that lost too much to cleaning, or held nothing usable, stops the stage
before anything is written, with what happened, dropped samples and the `--set` that relaxes it."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from core.errors import InputError

WEB_FILTERS = ("language", "boilerplate", "gopher_repetition", "gopher_quality", "c4", "fineweb")
LOST_DATA = ("truncated_or_corrupt", "corrupt_parquet")  # input problems that lose an unknown part of a file


class DropGuard(InputError):
    """An input lost too much to cleaning: the message ends with the `--set` arguments that relax it."""


SAMPLE_STEP = {"exact_dedup": "exact_duplicate", "near_dedup": "near_duplicate", "split": "decontamination"}


def _samples(work: Path, name: str, step: str, n: int = 2) -> list[str]:
    step = SAMPLE_STEP.get(step, step)
    rows = [json.loads(line) for p in sorted((work / name / "samples").glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines()]
    return [" ".join(r["text"].split())[:160] for r in rows if r["step"] == step][:n]


def problem_summary(problems: list[dict]) -> str:
    kinds = Counter(p["kind"] for p in problems)
    first = problems[0]
    return (", ".join(f"{k} {v}" for k, v in kinds.most_common()) + f"; the first: {first['where']}: "
            f"{first['detail']}")


def corpus_guard(name: str, spec: str, preset: str, max_drop_fraction: float, m: dict, problems: list[dict],
                 work: Path, final: bool) -> tuple[str, str]:
    """('', '') when the corpus kept enough, else (what happened, the --set that relaxes it). An input with no
    usable records at all is an error no setting relaxes. `spec`: the input's path; `m`: its corpus metrics."""
    read = m["docs_in"] + len(problems)
    if m["docs_in"] == 0:
        detail = f"; problems: {problem_summary(problems)}" if problems else ""
        raise InputError(f"{spec}: data.{name} holds no usable documents ({read} record(s) read{detail})")
    lost = [p for p in problems if p["kind"] in LOST_DATA]
    if lost:  # a count of records cannot say how much of the file went with it
        raise InputError(f"{lost[0]['where']}: {lost[0]['detail']}; data.{name} lost part of a file "
                         f"({len(lost)} such file(s)): repair or replace it ({problem_summary(problems)})")
    if problems and len(problems) / read > max_drop_fraction:
        raise InputError(f"{spec}: {len(problems)} of {read} records of data.{name} are unreadable "
                         f"({len(problems) / read:.1%}, above clean.max_drop_fraction={max_drop_fraction}): "
                         f"{problem_summary(problems)}")
    drops = {k: sum(r.values()) for k, r in m["dropped"].items()}
    worst = max(drops, key=drops.get, default=None)
    total = m["dropped_total"] / m["docs_in"]
    if worst and drops[worst] / m["docs_in"] > max_drop_fraction:
        what = (f"corpus '{name}' ({spec}): filter '{worst}' ({preset} preset) dropped {drops[worst]} of "
                f"{m['docs_in']} documents ({drops[worst] / m['docs_in']:.1%})")
    elif total > max_drop_fraction:
        chain = "the whole cleaning chain" if final else "the filters together"
        what = (f"corpus '{name}' ({spec}): {chain} ({preset} preset) removed {m['dropped_total']} of "
                f"{m['docs_in']} documents ({total:.1%}); the largest share went to '{worst}'")
    else:
        return "", ""
    reasons = m["dropped"].get(worst, {})
    top = max(reasons, key=reasons.get) if reasons else worst
    examples = "".join(f"\n    - {t!r}" for t in _samples(work, name, worst))
    what += (f", above clean.max_drop_fraction={max_drop_fraction}. Top reason: {top} ({reasons.get(top, 0)})."
             + (f" Dropped, for example:{examples}" if examples else ""))
    if preset == "web" and worst in WEB_FILTERS:
        return what + "\n  The web filters expect web prose; books, code, math and chat want the curated preset.", \
            f"--set clean.preset.{name}=curated"
    if preset == "curated" and worst == "sanity":
        return what, f"--set clean.preset.{name}=none"
    return what, f"--set clean.max_drop_fraction={min(math.ceil(total * 100 + 1) / 100, 1.0)}"


def raise_guards(found: list[tuple[str, str]]) -> None:
    found = [f for f in found if f[0]]
    if found:
        fixes = " ".join(dict.fromkeys(fix for _, fix in found))
        raise DropGuard("\n".join(what for what, _ in found) + "\nNothing was written. If these documents are "
                        f"what you want to train on, rerun with:\n  lifecycle run {fixes}")
