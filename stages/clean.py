"""Stage `clean`: a datatrove pipeline per corpus, then the instruction and preference sets.

Corpora (general, domain), as datatrove passes on the configured executor (local, Slurm or Ray):
  1. read (text, JSONL, .gz, parquet, HTML, HF datasets; bad records counted with file:line) -> repair and
     normalise Unicode (ftfy, NFKC), HTML to text (trafilatura) -> boilerplate lines -> language ID
     (py3langid: its model ships in the package) -> Gopher repetition -> Gopher quality -> C4 -> FineWeb
     (project's fast blocks, same decisions as datatrove's) -> PII redaction -> filtered shards
  2-3. exact dedup (datatrove: signatures, then duplicates found across the whole corpus)
  4-6. MinHash near-dedup across the whole corpus (datatrove: signatures on word 5-grams, 14 bands x 8,
     buckets, clusters)
  7. drop duplicates, split train/held-out by a stable hash, drop training documents sharing a long n-gram
     with any evaluation set (held-out documents and held-out task prompts) -> sharded parquet
Every pass streams; memory is flat in the corpus size. Instructions and preferences are small: parsed into
canonical records in memory, deduplicated, split, and decontaminated against held-out task subjects.

Outputs: data/clean/{general,domain}/{train,heldout}/NNNNN.parquet, data/clean/{instructions,preferences}.
{train,heldout}.jsonl, data/clean/dropped_samples.jsonl and problems.jsonl; metrics/clean.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                      MinhashDedupSignature)
from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                  ExactFindDedups)
from datatrove.pipeline.dedup.minhash import SENTINEL, MinhashConfig
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer
from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.errors import ConfigError, InputError, LifecycleError
from core.formats import read_instructions, read_preferences
from core.io import atomic_dir, write_json, write_jsonl
from core.quality import (FastC4QualityFilter, FastFineWebQualityFilter, FastGopherQualityFilter,
                          FastGopherRepetitionFilter, tokens_for)
from core.readers import CorpusReader, is_hf_dataset_dir, read_problems, split_spec

OUT_DIR = Path("data/clean")
METRICS = Path("metrics/clean.json")
CORPORA = ("general", "domain")


# --------------------------------------------------------------------------- config
class DataConfig(StageConfig):
    general: str
    domain: str
    instructions: str
    preferences: str


class GopherRepetitionConfig(StageConfig):
    """Gopher (Rae et al. 2021, table A1) repetition rules; datatrove's defaults."""
    enabled: bool = True
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]


class GopherQualityConfig(StageConfig):
    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3
    max_avg_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: list[str] | None = None


class C4Config(StageConfig):
    """C4 (Raffel et al. 2020) line and page rules, on lines (C4's own setting)."""
    enabled: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


class FineWebConfig(StageConfig):
    """FineWeb (Penedo et al. 2024) quality rules."""
    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


class LanguageConfig(StageConfig):
    enabled: bool = True
    languages: list[str] = ["en"]
    min_score: float = Field(0.65, ge=0, le=1)


class MinHashConfig(StageConfig):
    enabled: bool = True
    ngram: int = Field(5, gt=0)
    bands: int = Field(14, gt=0)
    rows: int = Field(8, gt=0)
    seed: int = 1
    verify_threshold: float = Field(0.7, ge=0, le=1, description=(
        "a candidate pair from the LSH buckets counts only if its full signature estimates Jaccard >= this; "
        "0 keeps every candidate (datatrove's behaviour)"))


class DecontaminationConfig(StageConfig):
    enabled: bool = True
    ngram: int = Field(13, gt=0, description="a training document sharing a word n-gram this long is dropped")


class ExecutorConfig(StageConfig):
    """Where datatrove runs the passes. Cluster executors take their own options (see docs/cleaning.md)."""
    type: Literal["local", "slurm", "ray"] = "local"
    workers: int = Field(0, ge=0, description="parallel processes; 0 = all cores")
    tasks: int = Field(0, ge=0, description="tasks per pass; 0 = one per input file")
    options: dict = {}


class Config(StageConfig):
    INCLUDE: ClassVar[tuple[str, ...]] = ("data",)
    data: DataConfig
    seed: int = 0
    strict: bool = False
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    heldout_max_docs: int = Field(10_000, ge=0, description=(
        "at most about this many held-out documents per corpus (the fraction shrinks on large corpora, which "
        "keeps the evaluation set, and decontamination's memory, bounded); 0 = no cap"))
    task_heldout_fraction: float = Field(0.1, gt=0, lt=1)
    fix_text: bool = True
    html_to_text: bool = True
    boilerplate_patterns: list[str] = []
    language: LanguageConfig = LanguageConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    redact_pii: bool = True
    exact_dedup: bool = True
    minhash: MinHashConfig = MinHashConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    samples_per_reason: int = Field(5, ge=0)
    shard_max_mb: int = Field(256, gt=0, description="a parquet shard grows to this size, then a new one opens")
    executor: ExecutorConfig = ExecutorConfig()
    corpus_overrides: dict[str, dict] = Field(
        {}, description="per corpus (general, domain), settings that differ, e.g. {domain: {c4: {enabled: false}}}")

    def for_corpus(self, name: str) -> "Config":
        """This config with the corpus's overrides merged in (validated like the rest)."""
        def merge(base: dict, over: dict) -> dict:
            return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict)
                               else v for k, v in over.items()}}

        unknown = set(self.corpus_overrides) - set(CORPORA)
        if unknown:
            raise ConfigError(f"params.yaml: clean.corpus_overrides: unknown corpus {sorted(unknown)[0]!r}")
        over = self.corpus_overrides.get(name)
        return self if not over else Config.model_validate(merge(self.model_dump(), over))


# --------------------------------------------------------------------------- text blocks
PII = [
    ("<EMAIL>", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("<IP>", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")),
    ("<PHONE>", re.compile(r"(?<!\w)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]\d{3}[ .-]\d{4}\b")),
]
HTML_HINT = re.compile(r"<(?:!doctype|html|body|head|p|div|br|span|article|table|li|h[1-6])\b", re.IGNORECASE)


def normalize(text: str, fix: bool = False) -> str:
    """Unicode repair (ftfy) and NFKC; control characters out; spaces collapsed; paragraph breaks kept."""
    if fix:
        import ftfy

        text = ftfy.fix_text(text, normalization="NFKC")
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True) or ""


def redact_pii(text: str) -> tuple[str, int]:
    total = 0
    for tag, pattern in PII:
        text, n = pattern.subn(tag, text)
        total += n
    return text, total


class Normalize(BaseFilter):
    name = "🔤 Normalise"

    def __init__(self, fix_text: bool, html: bool, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.fix_text, self.html = fix_text, html

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.html and HTML_HINT.search(doc.text[:2000]):
            doc.text = html_to_text(doc.text)
            self.stat_update("html_to_text")
        doc.text = normalize(doc.text, self.fix_text)
        return True if doc.text else (False, "empty")


class BoilerplateLines(BaseFilter):
    name = "🧹 Boilerplate lines"

    def __init__(self, patterns: list[str], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.patterns = [p.lower() for p in patterns]

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        kept = [line for line in doc.text.split("\n") if not any(p in line.lower() for p in self.patterns)]
        self.stat_update("lines_removed", value=doc.text.count("\n") + 1 - len(kept))
        doc.text = "\n".join(kept).strip()
        return True if doc.text else (False, "boilerplate_only")


class LanguageFilter(BaseFilter):
    name = "🌍 Language (py3langid)"

    def __init__(self, languages: list[str], min_score: float, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.languages, self.min_score = set(languages), min_score
        self._identifier = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        lang, score = self._identifier.classify(doc.text.replace("\n", " "))
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(score), 4)
        return lang in self.languages and score >= self.min_score or (False, "language")


class RedactPII(PipelineStep):
    name = "🔒 PII redaction"
    type = "✂️ - FORMAT"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            doc.text, n = redact_pii(doc.text)
            if n:
                self.stat_update("docs_with_pii")
                self.stat_update("redactions", value=n)
            yield doc


class FastWords(WordTokenizer):
    """datatrove's English word splitter, with the same words, for MinHash shingles (see core.quality).
    Sentences are left to datatrove's own spaCy splitter."""

    def word_tokenize(self, text: str) -> list[str]:
        return list(tokens_for(self.language).words(text))

    def sent_tokenize(self, text: str) -> list[str]:
        return load_word_tokenizer(self.language).sent_tokenize(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return load_word_tokenizer(self.language).span_tokenize(text)


class DropSampler:
    """An exclusion writer that keeps the first few dropped documents per reason and rank."""

    def __init__(self, folder: str, step: str, per_reason: int):
        self.folder, self.step, self.per_reason = folder, step, per_reason
        self.counts: Counter = Counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, doc: Document, rank: int = 0, **kwargs) -> None:
        reason = doc.metadata.get("filter_reason", self.step)
        if self.counts[reason] >= self.per_reason:
            return
        self.counts[reason] += 1
        os.makedirs(self.folder, exist_ok=True)
        with open(f"{self.folder}/{rank:05d}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, "reason": reason, "id": doc.id, "text": doc.text[:1000]}) + "\n")


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def is_heldout(key: str, fraction: float, seed: int) -> bool:
    return (stable_hash(f"{seed}:{key}") % 1_000_000) < fraction * 1_000_000


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes of the lower-cased word n-grams of a text (the whole text if it is shorter)."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    grams = [" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))]
    return np.array([stable_hash(g) for g in grams], dtype=np.uint64)


def exact_key(doc: Document) -> str:
    return " ".join(doc.text.lower().split())


class SplitWriter(PipelineStep):
    """Held-out or train by a stable hash; training documents sharing an n-gram with an eval set are dropped."""
    name = "✂️ Split + decontaminate"
    type = "💽 - WRITER"

    def __init__(self, out: str, cfg: Config, eval_ngrams: str | None, samples: DropSampler):
        super().__init__()
        self.out, self.cfg, self.eval_ngrams, self.samples = out, cfg, eval_ngrams, samples

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        n = self.cfg.decontamination.ngram
        eval_set = np.load(self.eval_ngrams) if self.eval_ngrams else None
        writers = {split: ParquetWriter(f"{self.out}/{split}", output_filename="${rank}.parquet",
                                        max_file_size=self.cfg.shard_max_mb * 2**20) for split in ("train", "heldout")}
        with writers["train"] as train, writers["heldout"] as heldout:
            for doc in data:
                if is_heldout(doc.text, self.cfg.heldout_fraction, self.cfg.seed):
                    heldout.write(doc, rank)
                    self.stat_update("heldout")
                    self.stat_update("bytes_out", value=len(doc.text.encode("utf-8")))
                    continue
                if eval_set is not None and eval_set.size:
                    hashes = ngram_hashes(doc.text, n)
                    pos = np.searchsorted(eval_set, hashes)
                    pos[pos == eval_set.size] = 0
                    if np.any(eval_set[pos] == hashes):
                        self.stat_update("dropped_contains_eval_ngram")
                        doc.metadata["filter_reason"] = "contains_eval_ngram"
                        self.samples.write(doc, rank)
                        continue
                train.write(doc, rank)
                self.stat_update("train")
                self.stat_update("bytes_out", value=len(doc.text.encode("utf-8")))
                yield doc


class HeldoutNgrams(PipelineStep):
    """Collects the n-gram hashes of the documents that will be held out (for decontamination)."""
    name = "🧪 Eval n-grams"

    def __init__(self, out: str, cfg: Config):
        super().__init__()
        self.out, self.cfg = out, cfg

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        chunks = []
        for doc in data:
            if is_heldout(doc.text, self.cfg.heldout_fraction, self.cfg.seed):
                chunks.append(ngram_hashes(doc.text, self.cfg.decontamination.ngram))
            yield doc
        os.makedirs(self.out, exist_ok=True)
        np.save(f"{self.out}/{rank:05d}.npy", np.unique(np.concatenate(chunks)) if chunks else
                np.zeros(0, dtype=np.uint64))


class RankFileReader(PipelineStep):
    """Reads back exactly this rank's intermediate file, so document indices line up across passes."""
    name = "📖 Intermediate reader"
    type = "📖 - READER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl"
        if not path.exists():
            return
        reader = JsonlReader(str(path.parent), glob_pattern=path.name, compression=None,
                             add_file_path=False)  # the work folder's path changes every run: keep it out of outputs
        yield from reader.read_file(path.name)


class VerifiableMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signatures, plus each document's full signature for verifying candidate pairs."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        rows, sigs = [], []
        current = [0]

        def tap():
            for i, doc in enumerate(data):
                current[0] = i
                yield doc

        get_signature = self.get_signature

        def recording(shingles):
            sig = get_signature(shingles)
            rows.append(current[0])
            sigs.append(np.concatenate([np.asarray(b, dtype=np.uint64) for b in sig]))
            return sig

        self.get_signature = recording
        try:
            yield from super().run(tap(), rank, world_size) or ()
        finally:
            self.get_signature = get_signature
        full = self.output_folder.resolve_paths("full")
        os.makedirs(full, exist_ok=True)
        n_hashes = self.config.num_buckets * self.config.hashes_per_bucket
        np.save(f"{full}/{rank:05d}.rows.npy", np.asarray(rows, dtype=np.int64))
        np.save(f"{full}/{rank:05d}.sigs.npy", np.stack(sigs) if sigs else np.zeros((0, n_hashes), np.uint64))


class VerifyPairs(PipelineStep):
    """Drops LSH candidate pairs whose full signatures agree on fewer than `threshold` of their hashes."""
    name = "🔎 MinHash pair verification"
    type = "🫂 - DEDUP"

    def __init__(self, sigs_folder: str, dups_folder: str, threshold: float):
        super().__init__()
        self.sigs, self.dups, self.threshold = Path(sigs_folder), Path(dups_folder), threshold

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        full: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def signature(file: int, doc: int) -> np.ndarray:
            if file not in full:  # memory-mapped: only the rows a pair touches are read
                full[file] = (np.load(self.sigs / "full" / f"{file:05d}.rows.npy"),
                              np.load(self.sigs / "full" / f"{file:05d}.sigs.npy", mmap_mode="r"))
            rows, sigs = full[file]
            return sigs[np.searchsorted(rows, doc)]

        for path in sorted(self.dups.glob("*.dups")):
            pairs = np.fromfile(path, dtype="<u4").reshape(-1, 4)
            keep = np.ones(len(pairs), dtype=bool)
            for i, (f1, d1, f2, d2) in enumerate(pairs):
                if f1 == SENTINEL:  # a match against an index has no signature here
                    continue
                keep[i] = np.mean(signature(int(f1), int(d1)) == signature(int(f2), int(d2))) >= self.threshold
            self.stat_update("candidate_pairs", value=len(pairs))
            self.stat_update("rejected_pairs", value=int((~keep).sum()))
            pairs[keep].astype("<u4").tofile(path)
        return
        yield


# --------------------------------------------------------------------------- execution
def _no_tracebacks(record) -> bool:
    # a failing task is reported once, by the stage (with the end of its log); its traceback stays in that log
    return record["exception"] is None


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's add_task_logger, quieter: the task log file gets everything, the console warnings only
    (datatrove's own puts every task's INFO lines and error tracebacks on the console)."""
    import sys

    from loguru import logger

    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
    logger.add(sys.stderr, level="WARNING", format=fmt, filter=_no_tracebacks)
    logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
    return logfile


class Runner:
    """Runs datatrove passes on the configured executor and gathers their stats."""

    def __init__(self, cfg: ExecutorConfig, work: Path):
        import sys

        from loguru import logger

        self.cfg, self.work = cfg, work
        self.workers = cfg.workers or os.cpu_count() or 1
        # datatrove's per-task logs stay in the work folder; the console gets one line per pass
        logger.remove()
        logger.add(sys.stderr, level="WARNING", filter=_no_tracebacks)
        import datatrove.executor.base

        datatrove.executor.base.add_task_logger = _task_logger

    def __call__(self, name: str, pipeline: list, tasks: int) -> dict:
        start = time.perf_counter()
        stats = self._run(name, pipeline, tasks)
        print(f"clean: {name:<24} {tasks:>3} task(s) {time.perf_counter() - start:7.1f} s", flush=True)
        return stats

    def _run(self, name: str, pipeline: list, tasks: int) -> dict:
        logs = self.work / "logs" / name
        if self.cfg.type == "local":
            from datatrove.executor import LocalPipelineExecutor

            executor = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(self.workers, tasks),
                                             logging_dir=str(logs), skip_completed=False, start_method="fork")
            executor.run()
        elif self.cfg.type == "ray":
            from datatrove.executor import RayPipelineExecutor

            RayPipelineExecutor(pipeline, tasks=tasks, workers=self.workers, logging_dir=str(logs),
                                skip_completed=False, **self.cfg.options).run()
        else:  # slurm: submit, then wait for every task's completion marker
            from datatrove.executor import SlurmPipelineExecutor

            SlurmPipelineExecutor(pipeline, tasks=tasks, workers=self.workers, logging_dir=str(logs),
                                  skip_completed=False, job_name=f"clean-{name}", **self.cfg.options).run()
            while len(list((logs / "completions").glob("*"))) < tasks:
                time.sleep(10)
        done = {p.name for p in (logs / "completions").glob("*")}
        failed = [rank for rank in range(tasks) if f"{rank:05d}" not in done]
        if failed:  # datatrove logs a failed task and carries on; a partial pass must not pass
            log = logs / "logs" / f"task_{failed[0]:05d}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:]) if log.exists() else "(no log)"
            raise LifecycleError(f"pass {name}: {len(failed)} of {tasks} datatrove task(s) failed; "
                                 f"task {failed[0]}'s log ends:\n{tail}")
        return gather_stats(logs)


def gather_stats(logs: Path) -> dict[str, Counter]:
    """{step name: Counter of its stats, summed over tasks} from datatrove's per-task stats files."""
    out: dict[str, Counter] = {}
    for path in sorted((logs / "stats").glob("*.json")):
        for step in json.loads(path.read_text()):
            counter = out.setdefault(step["name"], Counter())
            for key, value in step.get("stats", {}).items():
                counter[key] += value["total"] if isinstance(value, dict) else value
    return out


def quality_blocks(cfg: Config, samples: str) -> list[BaseFilter]:
    def sampler(step: str) -> DropSampler:
        return DropSampler(samples, step, cfg.samples_per_reason)

    lang = cfg.language.languages[0]
    blocks: list[BaseFilter] = [Normalize(cfg.fix_text, cfg.html_to_text, exclusion_writer=sampler("normalize"))]
    if cfg.boilerplate_patterns:
        blocks.append(BoilerplateLines(cfg.boilerplate_patterns, exclusion_writer=sampler("boilerplate")))
    if cfg.language.enabled:
        blocks.append(LanguageFilter(cfg.language.languages, cfg.language.min_score,
                                     exclusion_writer=sampler("language")))
    if cfg.gopher_repetition.enabled:
        c = cfg.gopher_repetition.model_dump(exclude={"enabled"})
        blocks.append(FastGopherRepetitionFilter(**{**c, "top_n_grams": tuple(map(tuple, c["top_n_grams"])),
                                                    "dup_n_grams": tuple(map(tuple, c["dup_n_grams"]))},
                                                 language=lang, exclusion_writer=sampler("gopher_repetition")))
    if cfg.gopher_quality.enabled:
        blocks.append(FastGopherQualityFilter(**cfg.gopher_quality.model_dump(exclude={"enabled"}), language=lang,
                                              exclusion_writer=sampler("gopher_quality")))
    if cfg.c4.enabled:
        blocks.append(FastC4QualityFilter(**cfg.c4.model_dump(exclude={"enabled"}), language=lang,
                                          exclusion_writer=sampler("c4")))
    if cfg.fineweb.enabled:
        c = cfg.fineweb.model_dump(exclude={"enabled"})
        blocks.append(FastFineWebQualityFilter(**c, language=lang, exclusion_writer=sampler("fineweb")))
    return blocks


def n_input_files(spec: str) -> int:
    """Input files of a corpus (a saved or hub HF dataset counts as one)."""
    if spec.startswith("hf://") or is_hf_dataset_dir(Path(spec)):
        return 1
    folder, pattern = split_spec(spec)
    if pattern is None:
        return sum(1 for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return sum(1 for p in Path(folder).glob(pattern) if p.is_file())


def clean_corpus(name: str, spec: str, cfg: Config, work: Path, run) -> tuple[dict, int]:
    """Passes 1-6 for one corpus. Returns (metrics, tasks); leaves deduplicated-ready files in `work`."""
    w = work / name
    tasks = cfg.executor.tasks or max(1, n_input_files(spec))
    samples = str(w / "samples")
    reader = CorpusReader(spec, problems_dir=str(w / "problems"), strict=cfg.strict)
    pipeline = [reader, *quality_blocks(cfg, samples)]
    if cfg.redact_pii:
        pipeline.append(RedactPII())
    pipeline.append(JsonlWriter(str(w / "filtered"), output_filename="${rank}.jsonl", compression=None))
    stats = run(f"{name}-1-filter", pipeline, tasks)
    if cfg.heldout_max_docs:
        filtered = sum(sum(1 for _ in open(p, "rb")) for p in (w / "filtered").glob("*.jsonl"))
        if filtered * cfg.heldout_fraction > cfg.heldout_max_docs:
            cfg = cfg.model_copy(update={"heldout_fraction": cfg.heldout_max_docs / filtered})

    exact = ExactDedupConfig(content_getter=exact_key, hash_config=HashConfig(precision=64))
    if cfg.exact_dedup:
        run(f"{name}-2-exact-signatures",
            [RankFileReader(str(w / "filtered")), ExactDedupSignature(str(w / "exact_sigs"), config=exact)], tasks)
        run(f"{name}-3-exact-find", [ExactFindDedups(str(w / "exact_sigs"), str(w / "exact_dups"), config=exact)], 1)
    minhash = MinhashConfig(n_grams=cfg.minhash.ngram, num_buckets=cfg.minhash.bands,
                            hashes_per_bucket=cfg.minhash.rows, seed=cfg.minhash.seed)
    pass4 = [RankFileReader(str(w / "filtered"))]
    if cfg.exact_dedup:
        pass4.append(ExactDedupFilter(str(w / "exact_dups"), config=exact,
                                      exclusion_writer=DropSampler(samples, "exact_duplicate", cfg.samples_per_reason)))
    if cfg.decontamination.enabled:
        pass4.append(HeldoutNgrams(str(w / "eval_ngrams"), cfg))
    if cfg.minhash.enabled:
        pass4.append(VerifiableMinhashSignature(str(w / "minhash_sigs"), config=minhash,
                                                language=FastWords(cfg.language.languages[0])))
    stats4 = run(f"{name}-4-signatures", pass4, tasks)
    if cfg.minhash.enabled:
        run(f"{name}-5-minhash-buckets", [MinhashDedupBuckets(str(w / "minhash_sigs"), str(w / "minhash_buckets"),
                                                              config=minhash)], cfg.minhash.bands)
        if cfg.minhash.verify_threshold > 0:
            run(f"{name}-5b-verify", [VerifyPairs(str(w / "minhash_sigs"), str(w / "minhash_buckets"),
                                                  cfg.minhash.verify_threshold)], 1)
        stats6 = run(f"{name}-6-minhash-cluster", [MinhashDedupCluster(str(w / "minhash_buckets"),
                                                                       str(w / "minhash_remove"), config=minhash,
                                                                       save_cluster_id=True)], 1)
    else:
        stats6 = {}
    return {"stats": {**stats, **stats4, **stats6}, "heldout_fraction": cfg.heldout_fraction}, tasks


def write_corpus(name: str, cfg: Config, work: Path, out: Path, eval_ngrams: Path | None, tasks: int, run,
                 heldout_fraction: float) -> dict:
    """Pass 7: drop duplicates, split, decontaminate, write parquet shards."""
    cfg = cfg.model_copy(update={"heldout_fraction": heldout_fraction})
    w = work / name
    samples = str(w / "samples")
    pipeline: list = [RankFileReader(str(w / "filtered"))]
    if cfg.exact_dedup:
        pipeline.append(ExactDedupFilter(str(w / "exact_dups"), config=ExactDedupConfig(
            content_getter=exact_key, hash_config=HashConfig(precision=64))))
    if cfg.minhash.enabled:
        pipeline.append(MinhashDedupFilter(str(w / "minhash_remove"),
                                           exclusion_writer=DropSampler(samples, "near_duplicate",
                                                                        cfg.samples_per_reason)))
    pipeline.append(SplitWriter(str(out / name), cfg, str(eval_ngrams) if eval_ngrams else None,
                                DropSampler(samples, "decontamination", cfg.samples_per_reason)))
    return run(f"{name}-7-split", pipeline, tasks)


STEP_KEYS = {"Corpus reader": "reader", "Normalise": "normalize", "Boilerplate": "boilerplate",
             "Language": "language", "Gopher Repetition": "gopher_repetition", "Gopher Quality": "gopher_quality",
             "C4 Quality": "c4", "FineWeb": "fineweb", "PII": "pii", "exact-deduplication stage 3": "exact_dedup",
             "MinHash stage 3": "minhash_cluster", "MinHash stage 4": "near_dedup", "Split": "split"}


def step_key(step_name: str) -> str | None:
    return next((key for hint, key in STEP_KEYS.items() if hint in step_name), None)


def corpus_metrics(stats: dict[str, Counter], problems: list[dict]) -> dict:
    """Docs and bytes in and out, drops per filter and reason, dedup clusters, input problems."""
    steps = {step_key(name): counter for name, counter in stats.items() if step_key(name)}
    dropped: dict[str, dict[str, int]] = {}
    for key, counter in steps.items():
        reasons = {k.removeprefix("dropped_"): int(v) for k, v in counter.items() if k.startswith("dropped_")}
        if not reasons and counter.get("dropped"):
            reasons = {"duplicate": int(counter["dropped"])}
        if reasons:
            dropped[key] = dict(sorted(reasons.items()))
    get = lambda key, stat: int(steps.get(key, Counter()).get(stat, 0))  # noqa: E731
    return {
        "docs_in": get("reader", "documents_read"),
        "bytes_in": get("reader", "bytes_read"),
        "input_problems": dict(sorted(Counter(p["kind"] for p in problems).items())),
        "dropped": dropped,
        "dropped_total": sum(sum(r.values()) for r in dropped.values()),
        "exact_duplicates": get("exact_dedup", "dropped"),
        "near_duplicate_clusters": get("minhash_cluster", "clusters"),
        "near_duplicates": get("near_dedup", "dropped"),
        "pii_docs": get("pii", "docs_with_pii"),
        "pii_redactions": get("pii", "redactions"),
        "train": get("split", "train"),
        "heldout": get("split", "heldout"),
        "bytes_out": get("split", "bytes_out"),
    }


# --------------------------------------------------------------------------- instructions and preferences
def task_key(messages: list[dict]) -> str:
    """The example a record is about: the last paragraph of its last user turn (e.g. the review)."""
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    return " ".join(normalize(user).split("\n")[-1].lower().split())


def paragraphs(text: str) -> set[str]:
    return {" ".join(p.lower().split()) for p in normalize(text).split("\n") if p.strip()}


def record_text(rec: dict) -> str:
    """The text a model trains on from a record, answers excluded."""
    if "text" in rec:
        return rec["text"]
    msgs = rec.get("messages") or rec["prompt"]
    return "\n".join(m["content"] for m in msgs if m["role"] != "assistant")


def clean_records(cfg: Config, metrics: dict, problems: list[dict]) -> dict[str, dict[str, list]]:
    """Instructions and preferences: canonical records, normalised, deduplicated, split; malformed rows are
    appended to `problems` (strict: an error)."""
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

    found: dict[str, list[dict]] = {"instructions": [], "preferences": []}

    def reader(name: str, read):  # strict: the first malformed row stops the stage, naming file:line
        return read(getattr(cfg.data, name), None if cfg.strict else found[name].append)

    instructions = [{"messages": normalize_messages(r["messages"])} for r in reader("instructions", read_instructions)]
    instructions = dedup_records("instructions", instructions, lambda r: str(r["messages"]))
    preferences = [{"prompt": normalize_messages(r["prompt"]), "chosen": normalize(r["chosen"]),
                    "rejected": normalize(r["rejected"])} for r in reader("preferences", read_preferences)]
    preferences = dedup_records("preferences", preferences, lambda r: str(r["prompt"]) + r["chosen"] + r["rejected"])
    for name, rows in found.items():
        metrics[name]["docs_in"] += len(rows)
        metrics[name]["input_problems"] = dict(sorted(Counter(p["kind"] for p in rows).items()))
        problems.extend(rows)
    splits: dict[str, dict[str, list]] = {}
    for name, records, msgs in (("instructions", instructions, lambda r: r["messages"]),
                                ("preferences", preferences, lambda r: r["prompt"])):
        splits[name] = {"train": [], "heldout": []}
        for rec in records:
            held = is_heldout(task_key(msgs(rec)), cfg.task_heldout_fraction, cfg.seed)
            splits[name]["heldout" if held else "train"].append(rec)
    # no training record may contain the subject of a held-out task prompt (e.g. the review itself)
    heldout_keys = {task_key(r.get("messages") or r["prompt"]) for s in splits.values() for r in s["heldout"]}
    for name, split in splits.items():
        before = len(split["train"])
        split["train"] = [r for r in split["train"] if not paragraphs(record_text(r)) & heldout_keys]
        metrics[name]["dropped"]["contains_heldout"] = before - len(split["train"])
        metrics[name]["train"], metrics[name]["heldout"] = len(split["train"]), len(split["heldout"])
        metrics[name]["docs_out"] = len(split["train"]) + len(split["heldout"])
    return splits


def eval_ngrams(cfg: Config, work: Path, splits: dict[str, dict[str, list]]) -> Path:
    """One sorted array of the n-gram hashes of every evaluation text: held-out documents and task prompts."""
    n = cfg.decontamination.ngram
    arrays = [np.load(p) for name in CORPORA for p in sorted((work / name / "eval_ngrams").glob("*.npy"))]
    for split in splits.values():
        arrays += [ngram_hashes(task_key(r.get("messages") or r["prompt"]), n) for r in split["heldout"]]
    path = work / "eval_ngrams.npy"
    np.save(path, np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64))
    return path


def check_inputs(cfg: Config) -> None:
    """Every input exists and has a readable form, before any long pass starts."""
    for name in CORPORA:
        spec = getattr(cfg.data, name)
        CorpusReader(spec, problems_dir="unused")
        if n_input_files(spec) == 0:
            raise InputError(f"{spec}: no input files")
    for name in ("instructions", "preferences"):
        spec = getattr(cfg.data, name)
        if not spec.startswith("hf://") and not Path(spec).exists():
            raise InputError(f"{spec}: input not found")


def local_input_bytes(cfg: Config) -> int:
    total = 0
    for name in (*CORPORA, "instructions", "preferences"):
        path = Path(getattr(cfg.data, name))
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            total += path.stat().st_size
    return total


def run(cfg: Config) -> dict:
    check_inputs(cfg)
    metrics: dict = {}
    # the work folder holds about two decompressed copies of the corpora, the output one more
    with atomic_dir(OUT_DIR, 3 * local_input_bytes(cfg)) as tmp:
        work = (tmp / ".work").resolve()  # absolute: fsspec caches folders by their path string
        runner = Runner(cfg.executor, work)
        tasks = {}
        for name in CORPORA:
            metrics[name], tasks[name] = clean_corpus(name, getattr(cfg.data, name), cfg.for_corpus(name), work,
                                                      runner)
        problems: list[dict] = []
        splits = clean_records(cfg, metrics, problems)
        ngrams = eval_ngrams(cfg, work, splits) if cfg.decontamination.enabled else None
        samples = []
        for name in CORPORA:
            stats = metrics[name].pop("stats")
            fraction = metrics[name].pop("heldout_fraction")
            stats.update(write_corpus(name, cfg.for_corpus(name), work, tmp, ngrams, tasks[name], runner, fraction))
            corpus_problems = read_problems(work / name / "problems")
            metrics[name] = corpus_metrics(stats, corpus_problems)
            metrics[name]["heldout_fraction"] = fraction
            metrics[name]["docs_out"] = metrics[name]["train"] + metrics[name]["heldout"]
            problems += corpus_problems
            for path in sorted((work / name / "samples").glob("*.jsonl")):
                samples += [{"dataset": name, **json.loads(line)} for line in path.read_text().splitlines()]
        for name, split in splits.items():
            for part, rows in split.items():
                write_jsonl(tmp / f"{name}.{part}.jsonl", rows)
        write_jsonl(tmp / "dropped_samples.jsonl", samples)
        write_jsonl(tmp / "problems.jsonl", problems)
        shutil.rmtree(work)
    metrics["docs_in"] = sum(metrics[n]["docs_in"] for n in (*CORPORA, "instructions", "preferences"))
    metrics["docs_out"] = sum(metrics[n]["docs_out"] for n in (*CORPORA, "instructions", "preferences"))
    metrics["input_problems"] = len(problems)
    write_json(METRICS, metrics)
    tracking.log_artifact(OUT_DIR / "dropped_samples.jsonl", "samples")
    tracking.log_artifact(OUT_DIR / "problems.jsonl", "samples")
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("clean", Config, run)


if __name__ == "__main__":
    # run the module imported under its own name: Ray and Slurm workers unpickle the pipeline's steps and
    # configs by reference, and cannot import them from another process's `__main__`
    from stages import clean

    clean.main()
