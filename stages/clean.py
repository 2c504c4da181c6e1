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

import json
import shutil
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter)
from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers import JsonlWriter
from pydantic import Field, model_validator

from core import tracking
from core.cleaning.guards import corpus_guard, raise_guards
from core.cleaning.quality import (FastC4QualityFilter, FastFineWebQualityFilter, FastGopherQualityFilter,
                                   FastGopherRepetitionFilter, SanityFilter)
from core.cleaning.records import RECORD_INPUTS, clean_records
from core.cleaning.runner import Runner, corpus_metrics
from core.cleaning.settings import (C4Config, DecontaminationConfig, ExecutorConfig, FineWebConfig,
                                    GopherQualityConfig, GopherRepetitionConfig, LanguageConfig, MinHashConfig,
                                    SanityConfig, preset_settings)
from core.cleaning.steps import (EXACT_DEDUP, BoilerplateLines, DropSampler, FastWords, HeldoutNgrams,
                                 LanguageFilter, Normalize, RankFileReader, RedactPII, SplitWriter,
                                 VerifiableMinhashSignature, VerifyPairs, heldout_fraction)
from core.cleaning.text import ngram_hashes, task_key
from core.config import StageConfig
from core.errors import ConfigError, InputError
from core.formats import InputSpec
from core.io import atomic_dir, write_json, write_jsonl
from core.readers import CorpusReader, n_input_files, read_problems

OUT_DIR = Path("data/clean")
METRICS = Path("metrics/clean.json")
CORPORA = ("general", "domain")
Preset = Literal["web", "curated", "none"]


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


def corpus_reader(spec: InputSpec, problems_dir: str, strict: bool) -> CorpusReader:
    return CorpusReader(spec.path, problems_dir=problems_dir, strict=strict,
                        text_key=str(spec.fields.get("text", "text")), subset=spec.subset, split=spec.split)


def filter_corpus(name: str, spec: InputSpec, cfg: Config, work: Path, run) -> tuple[dict, int]:
    """Pass 1 for one corpus: read, normalise, filter, redact -> work/<name>/filtered. Returns (stats, tasks)."""
    w = work / name
    tasks = cfg.executor.tasks or max(1, n_input_files(spec.path))
    pipeline = [corpus_reader(spec, str(w / "problems"), cfg.strict), *quality_blocks(cfg, str(w / "samples"))]
    if cfg.redact_pii:
        pipeline.append(RedactPII())
    pipeline.append(JsonlWriter(str(w / "filtered"), output_filename="${rank}.jsonl", compression=None))
    return run(f"{name}-1-filter", pipeline, tasks), tasks


def dedup_corpus(name: str, cfg: Config, work: Path, run, tasks: int) -> tuple[dict, float]:
    """Passes 2-6 for one corpus: exact and near-duplicate signatures and clusters. Returns (stats, the held-out
    fraction pass 7 splits by); leaves deduplicated-ready files in `work`."""
    w = work / name
    samples = str(w / "samples")
    fraction = heldout_fraction(w / "filtered", cfg.heldout_fraction, cfg.heldout_min_docs, cfg.heldout_max_docs,
                                cfg.seed)
    if cfg.exact_dedup:
        run(f"{name}-2-exact-signatures",
            [RankFileReader(str(w / "filtered")), ExactDedupSignature(str(w / "exact_sigs"), config=EXACT_DEDUP)],
            tasks)
        run(f"{name}-3-exact-find",
            [ExactFindDedups(str(w / "exact_sigs"), str(w / "exact_dups"), config=EXACT_DEDUP)], 1)
    minhash = MinhashConfig(n_grams=cfg.minhash.ngram, num_buckets=cfg.minhash.bands,
                            hashes_per_bucket=cfg.minhash.rows, seed=cfg.minhash.seed)
    pass4 = [RankFileReader(str(w / "filtered"))]
    if cfg.exact_dedup:
        pass4.append(ExactDedupFilter(str(w / "exact_dups"), config=EXACT_DEDUP,
                                      exclusion_writer=DropSampler(samples, "exact_duplicate", cfg.samples_per_reason)))
    if cfg.decontamination.enabled:
        pass4.append(HeldoutNgrams(str(w / "eval_ngrams"), fraction, cfg.seed, cfg.decontamination.ngram))
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
    return {**stats4, **stats6}, fraction


def write_corpus(name: str, cfg: Config, work: Path, out: Path, eval_ngrams: Path | None, tasks: int, run,
                 heldout_fraction: float) -> dict:
    """Pass 7: drop duplicates, split, decontaminate, write parquet shards."""
    w = work / name
    samples = str(w / "samples")
    pipeline: list = [RankFileReader(str(w / "filtered"))]
    if cfg.exact_dedup:
        pipeline.append(ExactDedupFilter(str(w / "exact_dups"), config=EXACT_DEDUP))
    if cfg.minhash.enabled:
        pipeline.append(MinhashDedupFilter(str(w / "minhash_remove"),
                                           exclusion_writer=DropSampler(samples, "near_duplicate",
                                                                        cfg.samples_per_reason)))
    pipeline.append(SplitWriter(str(out / name), heldout_fraction, cfg.seed, cfg.decontamination.ngram,
                                cfg.shard_max_mb, str(eval_ngrams) if eval_ngrams else None,
                                DropSampler(samples, "decontamination", cfg.samples_per_reason)))
    return run(f"{name}-7-split", pipeline, tasks)


def eval_ngrams(cfg: Config, work: Path, splits: dict[str, dict[str, list]]) -> Path:
    """One sorted array of the n-gram hashes of every evaluation text: held-out documents and task prompts."""
    n = cfg.decontamination.ngram
    arrays = [np.load(p) for name in CORPORA for p in sorted((work / name / "eval_ngrams").glob("*.npy"))]
    for split in splits.values():
        arrays += [ngram_hashes(task_key(r.get("messages") or r["prompt"]), n) for r in split["heldout"]]
    path = work / "eval_ngrams.npy"
    np.save(path, np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64))
    return path


def guard(cfg: Config, name: str, m: dict, problems: list[dict], work: Path, final: bool) -> tuple[str, str]:
    """The drop guard for one corpus, under its own settings (corpus_overrides may relax max_drop_fraction)."""
    return corpus_guard(name, getattr(cfg.data, name).path, cfg.preset_of(name), cfg.for_corpus(name).max_drop_fraction,
                        m, problems, work, final)


def check_inputs(cfg: Config) -> None:
    """Every input exists and has a readable form, before any long pass starts."""
    for name in CORPORA:
        spec = getattr(cfg.data, name)
        corpus_reader(spec, "unused", False)
        if n_input_files(spec.path) == 0:
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
        splits = clean_records(cfg.data.instructions, cfg.data.preferences, strict=cfg.strict, seed=cfg.seed,
                               heldout_fraction=cfg.task_heldout_fraction, min_records=cfg.min_records,
                               max_drop_fraction=cfg.max_drop_fraction, metrics=metrics,
                               problems=problems)  # small, and refused in seconds when broken
        runner = Runner(cfg.executor, work)
        tasks, stats, corpus_problems = {}, {}, {}
        for name in CORPORA:
            stats[name], tasks[name] = filter_corpus(name, getattr(cfg.data, name), cfg.for_corpus(name), work, runner)
            corpus_problems[name] = read_problems(work / name / "problems")
        # every corpus's filters checked before any dedup pass, so one message holds every fix
        raise_guards([guard(cfg, name, corpus_metrics(stats[name], corpus_problems[name]), corpus_problems[name],
                            work, final=False) for name in CORPORA])
        fractions = {}
        for name in CORPORA:
            found, fractions[name] = dedup_corpus(name, cfg.for_corpus(name), work, runner, tasks[name])
            stats[name].update(found)
        ngrams = eval_ngrams(cfg, work, splits) if cfg.decontamination.enabled else None
        samples = []
        for name in CORPORA:
            fraction = fractions[name]
            stats[name].update(write_corpus(name, cfg.for_corpus(name), work, tmp, ngrams, tasks[name], runner,
                                            fraction))
            metrics[name] = corpus_metrics(stats[name], corpus_problems[name])
            metrics[name]["preset"] = cfg.preset_of(name)
            metrics[name]["heldout_fraction"] = fraction
            metrics[name]["docs_out"] = metrics[name]["train"] + metrics[name]["heldout"]
            problems += corpus_problems[name]
            for path in sorted((work / name / "samples").glob("*.jsonl")):
                samples += [{"dataset": name, **json.loads(line)} for line in path.read_text().splitlines()]
        raise_guards([guard(cfg, name, metrics[name], corpus_problems[name], work, final=True) for name in CORPORA])
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
    main()
