"""Cleaning throughput: datatrove's four heuristic filters against core.cleaning.quality's fast drop-in versions.

Both pipelines read the same generated web-crawl-like JSONL shards and run under datatrove's
LocalPipelineExecutor; each runs in its own fresh subprocess so that its peak memory (RSS summed over the
whole process tree) is its own. The pair runs twice, in the order datatrove, ours, ours, datatrove, and the
best wall time of each is reported. Every document's keep/drop decision, drop reason and kept text are
compared between the two pipelines.

    .venv/bin/python -m benchmarks.clean_throughput [--docs 20000] [--workers N]

Results go to benchmarks/results/clean.json under the key "throughput" (other keys are left alone).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "clean"
RESULTS = ROOT / "benchmarks" / "results" / "clean.json"
PIPELINES = ("datatrove", "ours")
ORDER = ("datatrove", "ours", "ours", "datatrove")  # alternating, so drift (cache, thermals) hits both alike
FILTER_NAMES = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")
SEED = 0
SAMPLE_EVERY_S = 0.25  # psutil walks the tree: sampling faster steals CPU from the pipeline


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- corpus
def make_corpus(corpus_dir: Path, n_docs: int, shards: int) -> dict:
    """Writes the shards and returns their size: documents and UTF-8 bytes of text."""
    from pipelines.web_corpus import write_shards

    files = write_shards(corpus_dir, n_docs, shards, seed=SEED)
    docs, text_bytes = 0, 0
    for path in files:  # read back, so the figures describe exactly what the pipelines read
        with open(path, encoding="utf-8") as f:
            for line in f:
                docs += 1
                text_bytes += len(json.loads(line)["text"].encode("utf-8"))
    return {"docs": docs, "text_bytes": text_bytes, "mb": round(text_bytes / 1e6, 3), "shards": shards,
            "seed": SEED, "generator": "pipelines.web_corpus.write_shards"}


# --------------------------------------------------------------------------- one pipeline (child process)
def build_pipeline(kind: str, corpus_dir: Path, run_dir: Path) -> list:
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from core.cleaning.quality import (FastC4QualityFilter, FastFineWebQualityFilter, FastGopherQualityFilter,
                              FastGopherRepetitionFilter)

    classes = {
        "datatrove": (GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter),
        "ours": (FastGopherRepetitionFilter, FastGopherQualityFilter, FastC4QualityFilter, FastFineWebQualityFilter),
    }[kind]
    # an exclusion writer per filter: dropped documents land there with metadata["filter_reason"]
    filters = [cls(exclusion_writer=JsonlWriter(str(run_dir / "excluded" / name)))
               for cls, name in zip(classes, FILTER_NAMES)]
    return [JsonlReader(str(corpus_dir)), *filters, JsonlWriter(str(run_dir / "kept"))]


def run_pipeline(kind: str, corpus_dir: Path, run_dir: Path, tasks: int, workers: int) -> None:
    """Runs in the child: executes the pipeline and records its wall time (imports and start-up excluded)."""
    from datatrove.executor import LocalPipelineExecutor

    executor = LocalPipelineExecutor(build_pipeline(kind, corpus_dir, run_dir), tasks=tasks, workers=workers,
                                     logging_dir=str(run_dir / "logs"))
    start = time.perf_counter()
    executor.run()
    wall = time.perf_counter() - start
    (run_dir / "timing.json").write_text(json.dumps({"pipeline_wall_s": wall}))


# --------------------------------------------------------------------------- measuring a child
def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # exited between listing and reading
    return total


def measure_run(kind: str, corpus_dir: Path, run_dir: Path, tasks: int, workers: int) -> dict:
    """Starts a fresh interpreter for one pipeline; samples its tree's RSS every SAMPLE_EVERY_S until it exits."""
    run_dir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "benchmarks.clean_throughput", "--run", kind, "--corpus", str(corpus_dir),
           "--run-dir", str(run_dir), "--tasks", str(tasks), "--workers", str(workers)]
    peak = 0
    start = time.perf_counter()
    with open(run_dir / "child.log", "w") as child_log:  # datatrove's logging is verbose: keep it off screen
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=child_log, stderr=subprocess.STDOUT)
        while child.poll() is None:
            peak = max(peak, tree_rss(child.pid))
            time.sleep(SAMPLE_EVERY_S)
    process_wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"{kind} pipeline failed (exit {child.returncode}); see {run_dir / 'child.log'}")
    timing = json.loads((run_dir / "timing.json").read_text())
    return {"pipeline_wall_s": timing["pipeline_wall_s"], "process_wall_s": process_wall, "peak_rss_bytes": peak}


# --------------------------------------------------------------------------- comparing outputs
def read_jsonl_folder(folder: Path):
    for path in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def decisions(run_dir: Path) -> dict[str, tuple[str | None, str | None]]:
    """id -> (drop reason as "filter:reason", or None if kept; kept text, or None if dropped)."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for name in FILTER_NAMES:
        for doc in read_jsonl_folder(run_dir / "excluded" / name):
            out[doc["id"]] = (f"{name}:{doc['metadata'].get('filter_reason')}", None)
    for doc in read_jsonl_folder(run_dir / "kept"):
        out[doc["id"]] = (None, doc["text"])
    return out


def compare(ref: dict, ours: dict, corpus_dir: Path, n_docs: int, show: int = 5) -> dict:
    if len(ref) != n_docs or len(ours) != n_docs or ref.keys() != ours.keys():
        sys.exit(f"document accounting is off: corpus {n_docs}, datatrove {len(ref)}, ours {len(ours)}")
    same_decision = sum((ref[i][0] is None) == (ours[i][0] is None) for i in ref)
    same_reason = sum(ref[i][0] == ours[i][0] for i in ref)
    kept_both = [i for i in ref if ref[i][0] is None and ours[i][0] is None]
    same_text = sum(ref[i][1] == ours[i][1] for i in kept_both)
    differing = [i for i in ref if ref[i] != ours[i]]
    differing.sort(key=lambda i: int(i.rsplit("-", 1)[1]))
    examples = []
    if differing:  # show the input text of the first few, so a disagreement can be reproduced exactly
        wanted = set(differing[:show])
        originals = {d["id"]: d["text"] for d in read_jsonl_folder(corpus_dir) if d["id"] in wanted}
        for i in differing[:show]:
            examples.append({"id": i, "text": originals[i], "datatrove_reason": ref[i][0], "ours_reason": ours[i][0],
                             "datatrove_kept_text": ref[i][1], "ours_kept_text": ours[i][1]})
    kept_ref = sum(v[0] is None for v in ref.values())
    return {
        "keep_drop": same_decision / n_docs,
        "reason": same_reason / n_docs,
        "kept_text": same_text / len(kept_both) if kept_both else 1.0,
        "docs_kept": {"datatrove": kept_ref, "ours": sum(v[0] is None for v in ours.values())},
        "differing_docs": len(differing),
        "first_differences": examples,
    }


def reason_counts(dec: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason, _ in dec.values():
        counts[reason or "kept"] = counts.get(reason or "kept", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- reporting
def machine() -> dict:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "datatrove": version("datatrove"),
            "spacy": version("spacy"), "platform": platform.platform(), "processor": platform.processor()}


def figures(runs: list[dict], corpus: dict, cores: int) -> dict:
    best = min(r["pipeline_wall_s"] for r in runs)
    docs_s, mb_s = corpus["docs"] / best, corpus["text_bytes"] / 1e6 / best
    return {
        "wall_s": round(best, 3),
        "wall_s_runs": [round(r["pipeline_wall_s"], 3) for r in runs],
        "process_wall_s_runs": [round(r["process_wall_s"], 3) for r in runs],
        "docs_per_s": round(docs_s, 1),
        "mb_per_s": round(mb_s, 3),
        "docs_per_s_per_core": round(docs_s / cores, 1),
        "mb_per_s_per_core": round(mb_s / cores, 3),
        "peak_rss_mib": round(max(r["peak_rss_bytes"] for r in runs) / 2**20, 1),
        "peak_rss_mib_runs": [round(r["peak_rss_bytes"] / 2**20, 1) for r in runs],
    }


def write_results(section: dict) -> None:
    """Updates only the "throughput" key; other benchmarks own the rest. Atomic: temp file + os.replace."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["throughput"] = section
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".clean.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, RESULTS)


def print_table(result: dict) -> None:
    p, a = result["pipelines"], result["agreement"]
    c = result["corpus"]
    print(f"\ncorpus: {c['docs']} docs, {c['mb']} MB, {c['shards']} shards; workers {result['workers']} "
          f"(best of {len(p['ours']['wall_s_runs'])} runs each)")
    print(f"{'pipeline':<10} {'wall s':>8} {'docs/s':>9} {'MB/s':>8} {'docs/s/core':>12} {'MB/s/core':>10} "
          f"{'peak RSS MiB':>13}")
    for name in PIPELINES:
        r = p[name]
        print(f"{name:<10} {r['wall_s']:>8.2f} {r['docs_per_s']:>9.1f} {r['mb_per_s']:>8.3f} "
              f"{r['docs_per_s_per_core']:>12.1f} {r['mb_per_s_per_core']:>10.3f} {r['peak_rss_mib']:>13.1f}")
    print(f"speedup {result['speedup']:.2f}x   peak RSS ratio (ours/datatrove) {result['peak_rss_ratio']:.2f}")
    print(f"agreement: keep/drop {a['keep_drop']:.4%}  reason {a['reason']:.4%}  kept text {a['kept_text']:.4%}  "
          f"({a['differing_docs']} differing docs; kept {a['docs_kept']['datatrove']} / {a['docs_kept']['ours']})")


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    # internal: the child process that runs one pipeline
    ap.add_argument("--run", choices=PIPELINES, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run:
        run_pipeline(args.run, args.corpus, args.run_dir, args.tasks, args.workers)
        return

    shards = 2 * args.workers
    shutil.rmtree(WORK, ignore_errors=True)  # fresh outputs: datatrove would skip tasks it finds completed
    corpus_dir = WORK / "corpus"
    log(f"generating {args.docs} documents into {shards} shards")
    corpus = make_corpus(corpus_dir, args.docs, shards)
    log(f"corpus: {corpus['docs']} docs, {corpus['mb']} MB")

    runs: dict[str, list[dict]] = {name: [] for name in PIPELINES}
    for n, kind in enumerate(ORDER, 1):
        log(f"run {n}/{len(ORDER)}: {kind} ...")
        r = measure_run(kind, corpus_dir, WORK / "runs" / f"{n}-{kind}", shards, args.workers)
        runs[kind].append(r)
        log(f"run {n}/{len(ORDER)}: {kind} done: pipeline {r['pipeline_wall_s']:.2f} s, "
            f"process {r['process_wall_s']:.2f} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB")

    log("comparing per-document decisions")
    # outputs are deterministic, so each pipeline's first run stands for both of its runs
    dec = {kind: decisions(WORK / "runs" / f"{ORDER.index(kind) + 1}-{kind}") for kind in PIPELINES}
    agreement = compare(dec["datatrove"], dec["ours"], corpus_dir, corpus["docs"])

    cores = min(args.workers, os.cpu_count() or 1)
    pipelines = {kind: figures(runs[kind], corpus, cores) for kind in PIPELINES}
    for kind in PIPELINES:
        pipelines[kind]["outcomes"] = reason_counts(dec[kind])
    result = {
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.clean_throughput", *sys.argv[1:]]),
        "corpus": corpus,
        "workers": args.workers,
        "tasks": shards,
        "method": ("each pipeline in a fresh subprocess running LocalPipelineExecutor (reader -> GopherRepetition "
                   "-> GopherQuality -> C4Quality -> FineWebQuality -> JsonlWriter, an exclusion JsonlWriter per "
                   "filter); order datatrove, ours, ours, datatrove; wall_s is the best of the runs of "
                   "executor.run() measured inside the subprocess (interpreter start and imports excluded); "
                   "per_core divides by min(workers, cpu_count); MB = 1e6 bytes of UTF-8 input text; peak RSS is "
                   "the max over runs of the RSS summed over the subprocess tree, sampled every 250 ms (shared "
                   "pages count once per process)"),
        "pipelines": pipelines,
        "speedup": round(pipelines["datatrove"]["wall_s"] / pipelines["ours"]["wall_s"], 3),
        "peak_rss_ratio": round(pipelines["ours"]["peak_rss_mib"] / pipelines["datatrove"]["peak_rss_mib"], 3),
        "agreement": agreement,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_results(result)
    print_table(result)
    for ex in agreement["first_differences"]:
        print(f"  differs: {ex['id']}: datatrove {ex['datatrove_reason']!r} vs ours {ex['ours_reason']!r}; "
              f"text {ex['text']!r:.300}")
    log(f"wrote {RESULTS.relative_to(ROOT)} [throughput]")


if __name__ == "__main__":
    main()
