"""Instructions and preferences: small, so cleaned in memory. Parsed into canonical records (core.formats),
normalised, deduplicated, split into train and held-out by the task's subject (e.g. the review), and
decontaminated: no training record may contain the subject of a held-out one."""
from __future__ import annotations

from collections import Counter

from core.cleaning.guards import problem_summary
from core.cleaning.text import is_heldout, normalize, paragraphs, record_text, task_key
from core.errors import InputError
from core.formats import InputSpec, read_instructions, read_preferences

RECORD_INPUTS = ("instructions", "preferences")


def clean_records(instructions: InputSpec, preferences: InputSpec, *, strict: bool, seed: int,
                  heldout_fraction: float, min_records: int, max_drop_fraction: float, metrics: dict,
                  problems: list[dict]) -> dict[str, dict[str, list]]:
    """{name: {train: [...], heldout: [...]}}; each input's figures go into `metrics[name]`, its malformed rows
    are appended to `problems` (strict: the first one is an error naming file:line)."""
    specs = {"instructions": instructions, "preferences": preferences}

    def dedup_records(name: str, records, key_of) -> list[dict]:
        out, seen, dups, n = [], set(), 0, 0
        for rec in records:
            n += 1
            k = key_of(rec)
            if k in seen:
                dups += 1
                continue
            seen.add(k)
            out.append(rec)
        metrics[name] = {"docs_in": n, "dropped": {"exact_duplicate": dups}}
        return out

    def normalize_messages(msgs: list[dict]) -> list[dict]:
        return [{"role": m["role"], "content": normalize(m["content"])} for m in msgs]

    found: dict[str, list[dict]] = {name: [] for name in RECORD_INPUTS}

    def reader(name: str, read):
        return read(specs[name], None if strict else found[name].append)

    rows = [{"messages": normalize_messages(r["messages"])} for r in reader("instructions", read_instructions)]
    cleaned = {"instructions": dedup_records("instructions", rows, lambda r: str(r["messages"]))}
    rows = [{**r, "prompt": normalize_messages(r["prompt"]), "chosen": normalize(r["chosen"]),
             "rejected": normalize(r["rejected"])} for r in reader("preferences", read_preferences)]
    cleaned["preferences"] = dedup_records("preferences", rows,
                                           lambda r: str(r["prompt"]) + r["chosen"] + r["rejected"])
    for name, bad in found.items():
        metrics[name]["docs_in"] += len(bad)
        metrics[name]["input_problems"] = dict(sorted(Counter(p["kind"] for p in bad).items()))
        problems.extend(bad)
        records_guard(name, specs[name].path, metrics[name], bad, min_records, max_drop_fraction)
    splits: dict[str, dict[str, list]] = {}
    for name, records in cleaned.items():
        splits[name] = {"train": [], "heldout": []}
        for rec in records:
            held = is_heldout(task_key(rec.get("messages") or rec["prompt"]), heldout_fraction, seed)
            splits[name]["heldout" if held else "train"].append(rec)
    # no training record may contain the subject of a held-out task prompt (e.g. the review itself)
    heldout_keys = {task_key(r.get("messages") or r["prompt"]) for s in splits.values() for r in s["heldout"]}
    for name, split in splits.items():
        before = len(split["train"])
        split["train"] = [r for r in split["train"] if not paragraphs(record_text(r)) & heldout_keys]
        metrics[name]["dropped"]["contains_heldout"] = before - len(split["train"])
        metrics[name]["train"], metrics[name]["heldout"] = len(split["train"]), len(split["heldout"])
        metrics[name]["docs_out"] = len(split["train"]) + len(split["heldout"])
        for part in ("train", "heldout"):
            if not split[part]:
                raise InputError(f"{specs[name].path}: no {name} record left for the {part} split of "
                                 f"{metrics[name]['docs_out']}; bring more records or change "
                                 "clean.task_heldout_fraction")
    return splits


def records_guard(name: str, spec: str, m: dict, problems: list[dict], min_records: int,
                  max_drop_fraction: float) -> None:
    """Enough usable records, few enough malformed ones."""
    total = m["docs_in"]
    usable = total - len(problems) - m["dropped"]["exact_duplicate"]
    detail = f"; problems: {problem_summary(problems)}" if problems else ""
    if usable < min_records:
        raise InputError(f"{spec}: {usable} usable {name} record(s) of {total} read (distinct, well-formed), "
                         f"fewer than clean.min_records={min_records}{detail}")
    if len(problems) / total > max_drop_fraction:
        raise InputError(f"{spec}: {len(problems)} of {total} {name} records are malformed "
                         f"({len(problems) / total:.1%}, above clean.max_drop_fraction={max_drop_fraction})"
                         f"{detail}")
