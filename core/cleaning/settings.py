"""Settings of the cleaning steps, as params.yaml's `clean` section spells them (the stage's config nests these).
The filters' defaults are the published recipes' (datatrove's defaults)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import StageConfig


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
