"""Stage `clean`: a datatrove pipeline per corpus, then the instruction and preference sets.

Each corpus is cleaned by a preset (`clean.preset`): `web` runs the web chain below (the published recipes of
Gopher, C4 and FineWeb, as FineWeb's own pipeline orders them); `curated` (books, code, math, chat, instruction
data) keeps normalisation, PII redaction, exact and near dedup and decontamination, and drops only what is junk
in any genre (the sanity filter: too short, binary or undecodable bytes, mojibake), as Dolma and The Stack do for
their non-web sources; `none` only normalises (no filter, no dedup). Per-corpus settings in `corpus_overrides`
override the preset. A drop guard stops the stage, before anything is written, when one filter (or the whole
chain) removes more than `max_drop_fraction` of a corpus, naming the filter, its top reason, two dropped samples
and the `--set` that relaxes it. Inputs with no usable records stop it too, instructions and preferences first.

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
import math
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
from pydantic import Field, model_validator

from core import tracking
from core.config import StageConfig
from core.errors import ConfigError, InputError, LifecycleError
from core.formats import InputSpec, read_instructions, read_preferences
from core.io import atomic_dir, write_json, write_jsonl
from core.quality import (FastC4QualityFilter, FastFineWebQualityFilter, FastGopherQualityFilter,
                          FastGopherRepetitionFilter, SanityFilter, tokens_for)
from core.readers import CorpusReader, is_hf_dataset_dir, read_problems, split_spec

OUT_DIR = Path("data/clean")
METRICS = Path("metrics/clean.json")
CORPORA = ("general", "domain")
RECORD_INPUTS = ("instructions", "preferences")
WEB_FILTERS = ("language", "boilerplate", "gopher_repetition", "gopher_quality", "c4", "fineweb")
Preset = Literal["web", "curated", "none"]
LOST_DATA = ("truncated_or_corrupt", "corrupt_parquet")  # input problems that lose an unknown part of a file


# --------------------------------------------------------------------------- config
class DataConfig(StageConfig):
    """params.yaml `data`: each input a path or {path, fields, subset, split} (core.formats.InputSpec)."""
    general: InputSpec
    domain: InputSpec
    instructions: InputSpec
    preferences: InputSpec

    @model_validator(mode="after")
    def _roles(self) -> "DataConfig":
        for name in (*CORPORA, *RECORD_INPUTS):
            getattr(self, name).check_roles("corpus" if name in CORPORA else name, f"data.{name}")
        return self


def preset_settings(preset: str) -> dict:
    """The settings a preset puts over the configured ones (corpus_overrides go over these in turn)."""
    if preset == "web":  # the configured chain as it stands
        return {}
    off = {key: {"enabled": False} for key in ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb")}
    # HTML conversion off too: code and docs corpora hold markup that is content, not a page to extract
    off.update(boilerplate_patterns=[], html_to_text=False, sanity={"enabled": preset == "curated"})
    if preset == "none":
        off.update(exact_dedup=False, minhash={"enabled": False})
    return off


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


class SanityConfig(StageConfig):
    """Junk in any genre: the curated preset's one quality filter (off in the web chain unless enabled)."""
    enabled: bool = False
    min_chars: int = Field(20, ge=0, description="shorter documents are dropped")
    min_words: int = Field(3, ge=0, description="documents with fewer whitespace-separated words are dropped")
    max_junk_char_ratio: float = Field(0.01, ge=0, le=1, description=(
        "share of replacement (U+FFFD), private-use or unassigned characters above which a document is binary junk"))


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
    preset: dict[str, Preset] = Field({"general": "web", "domain": "curated"}, description=(
        "per corpus: web (Gopher, C4, FineWeb, language ID, boilerplate) | curated (sanity filter only) | none"))
    max_drop_fraction: float = Field(0.5, gt=0, le=1, description=(
        "a filter, the whole chain, or bad input records removing more of an input than this stops the stage"))
    min_records: int = Field(10, ge=1, description="instructions and preferences: fewer usable records stop the stage")
    heldout_min_docs: int = Field(50, ge=1, description=(
        "held-out documents per corpus at least (up to half a small corpus), whatever heldout_fraction gives"))
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    heldout_max_docs: int = Field(10_000, ge=0, description=(
        "at most about this many held-out documents per corpus (the fraction shrinks on large corpora, which "
        "keeps the evaluation set, and decontamination's memory, bounded); 0 = no cap"))
    task_heldout_fraction: float = Field(0.1, gt=0, lt=1)
    fix_text: bool = True
    html_to_text: bool = True
    boilerplate_patterns: list[str] = []
    language: LanguageConfig = LanguageConfig()
    sanity: SanityConfig = SanityConfig()
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

        for key in ("corpus_overrides", "preset"):
            unknown = set(getattr(self, key)) - set(CORPORA)
            if unknown:
                raise ConfigError(f"params.yaml: clean.{key}: unknown corpus {sorted(unknown)[0]!r}")
        over = merge(preset_settings(self.preset_of(name)), self.corpus_overrides.get(name) or {})
        return self if not over else Config.model_validate(merge(self.model_dump(), over))

    def preset_of(self, name: str) -> str:
        return self.preset.get(name, "web")


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
    if not text.replace("\n", "").replace("\t", "").isprintable():  # the common case has no control character
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
    if cfg.sanity.enabled:
        blocks.append(SanityFilter(**cfg.sanity.model_dump(exclude={"enabled"}), exclusion_writer=sampler("sanity")))
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


def n_input_files(spec: InputSpec) -> int:
    """Input files of a corpus (a saved or hub HF dataset counts as one)."""
    if spec.path.startswith("hf://") or is_hf_dataset_dir(Path(spec.path)):
        return 1
    folder, pattern = split_spec(spec.path)
    if pattern is None:
        return sum(1 for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return sum(1 for p in Path(folder).glob(pattern) if p.is_file())


def corpus_reader(spec: InputSpec, problems_dir: str, strict: bool) -> CorpusReader:
    return CorpusReader(spec.path, problems_dir=problems_dir, strict=strict,
                        text_key=str(spec.fields.get("text", "text")), subset=spec.subset, split=spec.split)


def filter_corpus(name: str, spec: InputSpec, cfg: Config, work: Path, run) -> tuple[dict, int]:
    """Pass 1 for one corpus: read, normalise, filter, redact -> work/<name>/filtered. Returns (stats, tasks)."""
    w = work / name
    tasks = cfg.executor.tasks or max(1, n_input_files(spec))
    pipeline = [corpus_reader(spec, str(w / "problems"), cfg.strict), *quality_blocks(cfg, str(w / "samples"))]
    if cfg.redact_pii:
        pipeline.append(RedactPII())
    pipeline.append(JsonlWriter(str(w / "filtered"), output_filename="${rank}.jsonl", compression=None))
    return run(f"{name}-1-filter", pipeline, tasks), tasks


def heldout_fraction(cfg: Config, filtered: Path) -> float:
    """heldout_fraction, shrunk to keep at most heldout_max_docs, raised on small corpora to hold out at least
    heldout_min_docs (up to half the corpus): the split is by hash, so the threshold is read off the hashes."""
    files = sorted(filtered.glob("*.jsonl"))
    n = sum(sum(1 for _ in open(p, "rb")) for p in files)
    fraction = cfg.heldout_fraction
    if cfg.heldout_max_docs and n * fraction > cfg.heldout_max_docs:
        fraction = cfg.heldout_max_docs / n
    want = min(math.ceil(cfg.heldout_min_docs * 1.25), n // 2)  # spare: dedup removes some later
    if want and n * fraction < 2 * want:
        keys = sorted(stable_hash(f"{cfg.seed}:{json.loads(line)['text']}") % 1_000_000
                      for p in files for line in open(p, encoding="utf-8"))
        fraction = max(fraction, min((keys[want - 1] + 1) / 1_000_000, 0.5))
    return fraction


def dedup_corpus(name: str, cfg: Config, work: Path, run, tasks: int) -> dict:
    """Passes 2-6 for one corpus: exact and near-duplicate signatures and clusters. Returns stats and the
    held-out fraction; leaves deduplicated-ready files in `work`."""
    w = work / name
    samples = str(w / "samples")
    cfg = cfg.model_copy(update={"heldout_fraction": heldout_fraction(cfg, w / "filtered")})
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
    return {"stats": {**stats4, **stats6}, "heldout_fraction": cfg.heldout_fraction}


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


# --------------------------------------------------------------------------- guards
class DropGuard(InputError):
    """An input lost too much to cleaning: the message ends with the `--set` arguments that relax it."""


SAMPLE_STEP = {"exact_dedup": "exact_duplicate", "near_dedup": "near_duplicate", "split": "decontamination"}


def _samples(work: Path, name: str, step: str, n: int = 2) -> list[str]:
    step = SAMPLE_STEP.get(step, step)
    rows = [json.loads(line) for p in sorted((work / name / "samples").glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines()]
    return [" ".join(r["text"].split())[:160] for r in rows if r["step"] == step][:n]


def _problem_summary(problems: list[dict]) -> str:
    kinds = Counter(p["kind"] for p in problems)
    first = problems[0]
    return (", ".join(f"{k} {v}" for k, v in kinds.most_common()) + f"; the first: {first['where']}: "
            f"{first['detail']}")


def corpus_guard(name: str, cfg: Config, m: dict, problems: list[dict], work: Path, final: bool) -> tuple[str, str]:
    """('', '') when the corpus kept enough, else (what happened, the --set that relaxes it). An input with no
    usable records at all is an error no setting relaxes."""
    spec = getattr(cfg.data, name).path
    read = m["docs_in"] + len(problems)
    if m["docs_in"] == 0:
        detail = f"; problems: {_problem_summary(problems)}" if problems else ""
        raise InputError(f"{spec}: data.{name} holds no usable documents ({read} record(s) read{detail})")
    lost = [p for p in problems if p["kind"] in LOST_DATA]
    if lost:  # a count of records cannot say how much of the file went with it
        raise InputError(f"{lost[0]['where']}: {lost[0]['detail']}; data.{name} lost part of a file "
                         f"({len(lost)} such file(s)): repair or replace it ({_problem_summary(problems)})")
    if problems and len(problems) / read > cfg.max_drop_fraction:
        raise InputError(f"{spec}: {len(problems)} of {read} records of data.{name} are unreadable "
                         f"({len(problems) / read:.1%}, above clean.max_drop_fraction={cfg.max_drop_fraction}): "
                         f"{_problem_summary(problems)}")
    preset = cfg.preset_of(name)
    drops = {k: sum(r.values()) for k, r in m["dropped"].items()}
    worst = max(drops, key=drops.get, default=None)
    total = m["dropped_total"] / m["docs_in"]
    if worst and drops[worst] / m["docs_in"] > cfg.max_drop_fraction:
        what = (f"corpus '{name}' ({spec}): filter '{worst}' ({preset} preset) dropped {drops[worst]} of "
                f"{m['docs_in']} documents ({drops[worst] / m['docs_in']:.1%})")
    elif total > cfg.max_drop_fraction:
        chain = "the whole cleaning chain" if final else "the filters together"
        what = (f"corpus '{name}' ({spec}): {chain} ({preset} preset) removed {m['dropped_total']} of "
                f"{m['docs_in']} documents ({total:.1%}); the largest share went to '{worst}'")
    else:
        return "", ""
    reasons = m["dropped"].get(worst, {})
    top = max(reasons, key=reasons.get) if reasons else worst
    examples = "".join(f"\n    - {t!r}" for t in _samples(work, name, worst))
    what += (f", above clean.max_drop_fraction={cfg.max_drop_fraction}. Top reason: {top} ({reasons.get(top, 0)})."
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


def records_guard(cfg: Config, metrics: dict, found: dict[str, list[dict]]) -> None:
    """Instructions and preferences: enough usable records, few enough malformed ones."""
    for name in RECORD_INPUTS:
        spec, problems = getattr(cfg.data, name).path, found[name]
        total = metrics[name]["docs_in"]
        usable = total - len(problems) - metrics[name]["dropped"]["exact_duplicate"]
        detail = f"; problems: {_problem_summary(problems)}" if problems else ""
        if usable < cfg.min_records:
            raise InputError(f"{spec}: {usable} usable {name} record(s) of {total} read (distinct, well-formed), "
                             f"fewer than clean.min_records={cfg.min_records}{detail}")
        if len(problems) / total > cfg.max_drop_fraction:
            raise InputError(f"{spec}: {len(problems)} of {total} {name} records are malformed "
                             f"({len(problems) / total:.1%}, above clean.max_drop_fraction={cfg.max_drop_fraction})"
                             f"{detail}")


STEP_KEYS = {"Corpus reader": "reader", "Normalise": "normalize", "Boilerplate": "boilerplate",
             "Language": "language", "Sanity": "sanity", "Gopher Repetition": "gopher_repetition",
             "Gopher Quality": "gopher_quality",
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
        # each filter's share of the documents read: what the drop guard compares with max_drop_fraction
        "drop_share": {k: round(sum(r.values()) / max(get("reader", "documents_read"), 1), 4)
                       for k, r in dropped.items()},
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
    preferences = [{**r, "prompt": normalize_messages(r["prompt"]), "chosen": normalize(r["chosen"]),
                    "rejected": normalize(r["rejected"])} for r in reader("preferences", read_preferences)]
    preferences = dedup_records("preferences", preferences, lambda r: str(r["prompt"]) + r["chosen"] + r["rejected"])
    for name, rows in found.items():
        metrics[name]["docs_in"] += len(rows)
        metrics[name]["input_problems"] = dict(sorted(Counter(p["kind"] for p in rows).items()))
        problems.extend(rows)
    records_guard(cfg, metrics, found)
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
        for part in ("train", "heldout"):
            if not split[part]:
                raise InputError(f"{getattr(cfg.data, name).path}: no {name} record left for the {part} split of "
                                 f"{metrics[name]['docs_out']}; bring more records or change "
                                 "clean.task_heldout_fraction")
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
        corpus_reader(spec, "unused", False)
        if n_input_files(spec) == 0:
            raise InputError(f"{spec.path}: no input files")
    for name in RECORD_INPUTS:
        spec = getattr(cfg.data, name).path
        if not spec.startswith("hf://") and not Path(spec).exists():
            raise InputError(f"{spec}: input not found")


def local_input_bytes(cfg: Config) -> int:
    total = 0
    for name in (*CORPORA, *RECORD_INPUTS):
        path = Path(getattr(cfg.data, name).path)
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
        problems: list[dict] = []
        splits = clean_records(cfg, metrics, problems)  # small, and refused in seconds when broken
        runner = Runner(cfg.executor, work)
        tasks, stats, corpus_problems = {}, {}, {}
        for name in CORPORA:
            stats[name], tasks[name] = filter_corpus(name, getattr(cfg.data, name), cfg.for_corpus(name), work, runner)
            corpus_problems[name] = read_problems(work / name / "problems")
        # every corpus's filters checked before any dedup pass, so one message holds every fix
        raise_guards([corpus_guard(name, cfg.for_corpus(name), corpus_metrics(stats[name], corpus_problems[name]),
                                   corpus_problems[name], work, final=False) for name in CORPORA])
        for name in CORPORA:
            found = dedup_corpus(name, cfg.for_corpus(name), work, runner, tasks[name])
            metrics[name] = {"stats": {**stats[name], **found["stats"]}, "heldout_fraction": found["heldout_fraction"]}
        ngrams = eval_ngrams(cfg, work, splits) if cfg.decontamination.enabled else None
        samples = []
        for name in CORPORA:
            corpus_stats = metrics[name].pop("stats")
            fraction = metrics[name].pop("heldout_fraction")
            corpus_stats.update(write_corpus(name, cfg.for_corpus(name), work, tmp, ngrams, tasks[name], runner,
                                             fraction))
            metrics[name] = corpus_metrics(corpus_stats, corpus_problems[name])
            metrics[name]["preset"] = cfg.preset_of(name)
            metrics[name]["heldout_fraction"] = fraction
            metrics[name]["docs_out"] = metrics[name]["train"] + metrics[name]["heldout"]
            problems += corpus_problems[name]
            for path in sorted((work / name / "samples").glob("*.jsonl")):
                samples += [{"dataset": name, **json.loads(line)} for line in path.read_text().splitlines()]
        raise_guards([corpus_guard(name, cfg.for_corpus(name), metrics[name], corpus_problems[name], work, final=True)
                      for name in CORPORA])
        for name in CORPORA:
            if not metrics[name]["train"] or not metrics[name]["heldout"]:
                raise InputError(f"{getattr(cfg.data, name).path}: data.{name} left {metrics[name]['train']} training "
                                 f"and {metrics[name]['heldout']} held-out documents after cleaning; both need some")
        for name, split in splits.items():
            for part, rows in split.items():
                write_jsonl(tmp / f"{name}.{part}.jsonl", rows)
        write_jsonl(tmp / "dropped_samples.jsonl", samples)
        write_jsonl(tmp / "problems.jsonl", problems)
        shutil.rmtree(work)
    metrics["docs_in"] = sum(metrics[n]["docs_in"] for n in (*CORPORA, *RECORD_INPUTS))
    metrics["docs_out"] = sum(metrics[n]["docs_out"] for n in (*CORPORA, *RECORD_INPUTS))
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
