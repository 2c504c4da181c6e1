"""Cleaning at scale: near-dup quality, memory against corpus size, and a 1 GB corpus.

    python -m benchmarks.clean_scale neardup            # planted pairs at known Jaccard: recall and precision
    python -m benchmarks.clean_scale memory             # the stage's corpus passes on N and 10N docs: peak RSS
    python -m benchmarks.clean_scale large --gb 1       # generate and clean a 1 GB corpus: time, peak RSS

Each part updates its key in benchmarks/results/clean.json. The corpus passes are the `clean` stage's own
(`stages.clean.filter_corpus` + `dedup_corpus` + `write_corpus`) with the published filter defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "clean_scale"
RESULTS = ROOT / "benchmarks" / "results" / "clean.json"


def save(key: str, value: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)


def machine() -> dict:
    import datatrove

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "datatrove": datatrove.__version__ if hasattr(datatrove, "__version__") else "0.10.1"}


def stage_config(spec: str, **overrides):
    """The clean stage's config with the published defaults (no demo overrides)."""
    from stages.clean import Config

    return Config.model_validate({"data": {"general": spec, "domain": spec, "instructions": "-", "preferences": "-"},
                                  **overrides})


def clean_one(spec: str, out: Path, **overrides) -> dict:
    """Passes 1-7 of the clean stage on one corpus, decontaminated against its own held-out documents."""
    import numpy as np

    from core.cleaning.runner import Runner, corpus_metrics
    from stages.clean import dedup_corpus, filter_corpus, write_corpus

    cfg = stage_config(spec, **overrides)
    shutil.rmtree(out, ignore_errors=True)
    work = out / ".work"
    runner = Runner(cfg.executor, work)
    stats, tasks = filter_corpus("general", cfg.data.general, cfg, work, runner)
    found, fraction = dedup_corpus("general", cfg, work, runner, tasks)
    ngrams = None
    if cfg.decontamination.enabled:
        arrays = [np.load(p) for p in sorted((work / "general" / "eval_ngrams").glob("*.npy"))]
        ngrams = work / "eval_ngrams.npy"
        np.save(ngrams, np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64))
    stats.update(found)
    stats.update(write_corpus("general", cfg, work, out, ngrams, tasks, runner, fraction))
    return corpus_metrics(stats, [])


# --------------------------------------------------------------------------- peak memory of a process tree
def run_measured(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB summed over the process and its children, stdout) of a command."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.25)  # psutil walks the tree: sampling faster steals a core from the workers

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed with exit {proc.returncode}")
    return time.perf_counter() - start, peak / 2**20, out


# --------------------------------------------------------------------------- parts
def neardup(n_base: int) -> dict:
    from pipelines.web_corpus import planted_near_duplicates

    texts, family, sims = planted_near_duplicates(n_base, seed=0)
    corpus = WORK / "neardup.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text("".join(json.dumps({"text": t, "id": str(i)}) + "\n" for i, t in enumerate(texts)))
    # dedup only: every quality filter off, so what is removed is what MinHash removed
    off = {"enabled": False}
    metrics = clean_one(str(corpus), WORK / "neardup_out", language=off, decontamination=off, gopher_repetition=off, gopher_quality=off,
                        c4=off, fineweb=off, fix_text=False, html_to_text=False, redact_pii=False)
    import pyarrow.parquet as pq

    kept = {int(i) for split in ("train", "heldout") for f in (WORK / "neardup_out/general" / split).glob("*.parquet")
            for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    pairs = [(m, max(sims[i] for i in m)) for m in members.values() if len(m) == 2]
    pair_j = {tuple(m): min(sims[i] for i in m) for m, _ in pairs}
    found = {m: any(i not in kept for i in m) for m in pair_j}
    removed = [i for i in range(len(texts)) if i not in kept]
    correct = sum(1 for i in removed if len(members[family[i]]) == 2)
    by_bucket = {}
    for lo in (0.80, 0.85, 0.90, 0.95):
        sel = [m for m, j in pair_j.items() if lo <= j < lo + 0.05]
        by_bucket[f"{lo:.2f}-{lo + 0.05:.2f}"] = {"pairs": len(sel), "recall": round(sum(found[m] for m in sel) /
                                                                                      max(len(sel), 1), 4)}
    planted = list(pair_j)
    result = {
        "setup": f"{n_base} base articles, one edited copy each at word 5-gram Jaccard uniform in [0.8, 1.0); "
                 f"{len(texts) - 2 * n_base} extra articles in pairs edited to Jaccard [0.3, 0.6) that must be kept; "
                 "MinHash 5-grams, 14 bands x 8 rows (stage defaults)",
        "planted_pairs": len(planted),
        "recall_at_jaccard_0.8": round(sum(found[m] for m in planted) / len(planted), 4),
        "recall_by_jaccard": by_bucket,
        "removed": len(removed),
        "precision": round(correct / max(len(removed), 1), 4),
        "theory_pair_recall_at_0.80": round(1 - (1 - 0.8 ** 8) ** 14, 4),
        "stage_metrics": {k: metrics[k] for k in ("docs_in", "near_duplicates", "near_duplicate_clusters",
                                                  "exact_duplicates")},
    }
    return result


def one_corpus_child(spec: str, out: str) -> None:
    """Run in a fresh process by `memory` and `large`: clean one corpus, print its metrics."""
    print(json.dumps(clean_one(spec, Path(out))))


def memory(base_docs: int) -> dict:
    from pipelines.web_corpus import write_shards

    rows = []
    for factor in (1, 10):
        corpus = WORK / f"mem_{factor}x"
        shutil.rmtree(corpus, ignore_errors=True)
        write_shards(corpus, base_docs * factor, shards=4 * factor)
        mb = sum(p.stat().st_size for p in corpus.glob("*.jsonl")) / 1e6
        wall, peak, out = run_measured([sys.executable, "-m", "benchmarks.clean_scale", "_child", str(corpus),
                                        str(WORK / f"mem_{factor}x_out")])
        m = json.loads(out.strip().splitlines()[-1])
        rows.append({"factor": factor, "docs": base_docs * factor, "input_mb": round(mb, 1), "shards": 4 * factor,
                     "wall_s": round(wall, 1), "peak_rss_mib": round(peak, 1), "docs_out": m["train"] + m["heldout"],
                     "docs_per_s": round(base_docs * factor / wall, 1)})
        print(rows[-1], flush=True)
    return {"runs": rows, "peak_ratio_10x_over_1x": round(rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3),
            "note": "the whole stage pass chain for one corpus, all cores, one task per input shard; RSS summed "
                    "over the process tree, sampled every 250 ms"}


def large(gb: float) -> dict:
    from pipelines.web_corpus import write_shards

    corpus = WORK / "large"
    shutil.rmtree(corpus, ignore_errors=True)
    t = time.perf_counter()
    write_shards(corpus, 10**9, shards=32, target_bytes=int(gb * 1e9))
    gen_s = time.perf_counter() - t
    mb = sum(p.stat().st_size for p in corpus.glob("*.jsonl")) / 1e6
    wall, peak, out = run_measured([sys.executable, "-m", "benchmarks.clean_scale", "_child", str(corpus),
                                    str(WORK / "large_out")])
    m = json.loads(out.strip().splitlines()[-1])
    return {"input_mb": round(mb, 1), "text_gb": gb, "docs_in": m["docs_in"], "docs_out": m["train"] + m["heldout"],
            "generate_s": round(gen_s, 1), "clean_wall_s": round(wall, 1), "peak_rss_mib": round(peak, 1),
            "mb_per_s": round(mb / wall, 2), "docs_per_s": round(m["docs_in"] / wall, 1), "metrics": m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["neardup", "memory", "large", "_child"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--base", type=int, default=1000, help="neardup: base articles")
    ap.add_argument("--docs", type=int, default=4000, help="memory: documents in the 1x corpus")
    ap.add_argument("--gb", type=float, default=1.0, help="large: gigabytes of text")
    a = ap.parse_args()
    if a.part == "_child":
        one_corpus_child(*a.args)
        return
    result = {"neardup": lambda: neardup(a.base), "memory": lambda: memory(a.docs), "large": lambda: large(a.gb)}[
        a.part]()
    result.update(machine=machine(), command=f"python -m benchmarks.clean_scale {' '.join(sys.argv[1:])}")
    save({"neardup": "near_dedup", "memory": "memory", "large": "large_corpus"}[a.part], result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
