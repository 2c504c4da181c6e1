"""Stage `clean`: normalise, filter, deduplicate, redact and split the four inputs.

Corpora (general, domain): Unicode NFKC, boilerplate-line removal, PII redaction, Gopher-style quality
rules, language ID (py3langid, model shipped in the package), exact dedup, MinHash near-dedup.
Instructions and preferences: parsed from the user's format into canonical records, deduplicated.
Everything is split train/held-out by a stable hash, and training records that contain a held-out
example are dropped, so no evaluation example is ever trained on.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.formats import read_corpus, read_instructions, read_preferences
from core.io import atomic_dir, write_json, write_jsonl

OUT_DIR = Path("data/clean")
METRICS = Path("metrics/clean.json")
STOPWORDS = {"the", "be", "to", "of", "and", "that", "have", "with", "is", "it", "in", "a", "i", "this", "was", "for"}


class DataConfig(StageConfig):
    general: str
    domain: str
    instructions: str
    preferences: str


class MinHashConfig(StageConfig):
    ngram: int = Field(5, gt=0)
    bands: int = Field(14, gt=0)
    rows: int = Field(8, gt=0)
    threshold: float = Field(0.7, gt=0, le=1, description="verified Jaccard for a candidate pair to count")


class Config(StageConfig):
    INCLUDE: ClassVar[tuple[str, ...]] = ("data",)
    data: DataConfig
    seed: int = 0
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    task_heldout_fraction: float = Field(0.1, gt=0, lt=1)
    min_words: int = Field(12, ge=0)
    max_words: int = Field(100_000, gt=0)
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    min_alpha_word_ratio: float = 0.8
    min_stopwords: int = 2
    language: str = "en"
    min_language_score: float = Field(0.65, ge=0, le=1)
    boilerplate_patterns: list[str] = ["cookie", "javascript", "all rights reserved", "subscribe", "click here",
                                       "terms of use", "privacy policy", "lorem ipsum"]
    minhash: MinHashConfig = MinHashConfig()
    redact_pii: bool = True
    samples_per_reason: int = 5


# --------------------------------------------------------------------------- text blocks
PII = [
    ("<EMAIL>", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("<IP>", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")),
    ("<PHONE>", re.compile(r"(?<!\w)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]\d{3}[ .-]\d{4}\b")),
]


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def strip_boilerplate(text: str, patterns: list[str]) -> tuple[str, int]:
    kept, removed = [], 0
    for line in text.splitlines():
        low = line.lower()
        if any(p in low for p in patterns) or low.count(" | ") >= 2:
            removed += 1
        else:
            kept.append(line)
    return "\n".join(kept), removed


def redact_pii(text: str) -> tuple[str, int]:
    total = 0
    for tag, pattern in PII:
        text, n = pattern.subn(tag, text)
        total += n
    return text, total


def quality_reason(text: str, cfg: Config) -> str | None:
    """The first Gopher-style rule a document fails, or None."""
    words = text.split()
    if len(words) < cfg.min_words:
        return "too_short"
    if len(words) > cfg.max_words:
        return "too_long"
    mean_len = sum(len(w) for w in words) / len(words)
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "mean_word_length"
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    if symbols / len(words) > cfg.max_symbol_word_ratio:
        return "symbol_ratio"
    if sum(any(c.isalpha() for c in w) for w in words) / len(words) < cfg.min_alpha_word_ratio:
        return "alpha_ratio"
    if len({w.lower().strip(".,;:!?") for w in words} & STOPWORDS) < cfg.min_stopwords:
        return "stopwords"
    return None


class LanguageFilter:
    def __init__(self, language: str, min_score: float):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.language, self.min_score = language, min_score

    def keep(self, text: str) -> bool:
        lang, score = self.identifier.classify(text.replace("\n", " "))
        return lang == self.language and score >= self.min_score


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def is_heldout(key: str, fraction: float, seed: int) -> bool:
    return (stable_hash(f"{seed}:{key}") % 1_000_000) < fraction * 1_000_000


# --------------------------------------------------------------------------- near-dedup
class MinHasher:
    PRIME = (1 << 31) - 1

    def __init__(self, cfg: MinHashConfig, seed: int):
        rng = np.random.default_rng(seed)
        n = cfg.bands * cfg.rows
        self.cfg = cfg
        self.a = rng.integers(1, self.PRIME, n, dtype=np.int64)
        self.b = rng.integers(0, self.PRIME, n, dtype=np.int64)

    def shingles(self, text: str) -> set[str]:
        words = re.findall(r"\w+", text.lower())
        n = self.cfg.ngram
        return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}

    def signature(self, shingles: set[str]) -> np.ndarray:
        x = np.array([stable_hash(s) % self.PRIME for s in shingles], dtype=np.int64)
        return ((self.a[:, None] * x[None, :] + self.b[:, None]) % self.PRIME).min(axis=1)

    def duplicates(self, texts: list[str]) -> dict[int, int]:
        """{index of a near-duplicate: index of the earlier document it duplicates}."""
        shingles = [self.shingles(t) for t in texts]
        parent = list(range(len(texts)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        sigs = [self.signature(s) for s in shingles]
        r = self.cfg.rows
        for band in range(self.cfg.bands):
            buckets: dict[bytes, int] = {}
            for i, sig in enumerate(sigs):
                key = sig[band * r:(band + 1) * r].tobytes()
                j = buckets.setdefault(key, i)
                if j != i and find(i) != find(j):
                    inter = len(shingles[i] & shingles[j])
                    if inter / len(shingles[i] | shingles[j]) >= self.cfg.threshold:
                        a, b = sorted((find(i), find(j)))
                        parent[b] = a
        return {i: find(i) for i in range(len(texts)) if find(i) != i}


# --------------------------------------------------------------------------- datasets
def clean_corpus(name: str, spec: str, cfg: Config, lang: LanguageFilter, samples: list[dict]) -> tuple[list[str], dict]:
    dropped: Counter[str] = Counter()
    stats = Counter()
    kept: list[str] = []
    seen: set[str] = set()

    def drop(reason: str, text: str) -> None:
        dropped[reason] += 1
        if sum(1 for s in samples if s["dataset"] == name and s["reason"] == reason) < cfg.samples_per_reason:
            samples.append({"dataset": name, "reason": reason, "text": text[:500]})

    for raw in read_corpus(spec):
        stats["docs_in"] += 1
        stats["bytes_in"] += len(raw.encode("utf-8"))
        text = normalize(raw)
        text, n_lines = strip_boilerplate(text, cfg.boilerplate_patterns)
        stats["boilerplate_lines_removed"] += n_lines
        if not text:
            drop("boilerplate_only", raw)
            continue
        # language first: a foreign document would otherwise be reported as failing a quality rule
        if len(text.split()) >= cfg.min_words and not lang.keep(text):
            drop("language", text)
            continue
        reason = quality_reason(text, cfg)
        if reason:
            drop(reason, text)
            continue
        if cfg.redact_pii:
            text, n_pii = redact_pii(text)
            stats["pii_redactions"] += n_pii
            stats["docs_with_pii"] += n_pii > 0
        key = " ".join(text.lower().split())
        if key in seen:
            drop("exact_duplicate", text)
            continue
        seen.add(key)
        kept.append(text)
    near = MinHasher(cfg.minhash, cfg.seed).duplicates(kept)
    for i in sorted(near):
        drop("near_duplicate", kept[i])
    stats["near_duplicate_clusters"] = len(set(near.values()))
    kept = [t for i, t in enumerate(kept) if i not in near]
    return kept, {**stats, "dropped": dict(sorted(dropped.items()))}


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


def run(cfg: Config) -> dict:
    lang = LanguageFilter(cfg.language, cfg.min_language_score)
    samples: list[dict] = []
    metrics: dict = {}
    splits: dict[str, dict[str, list]] = {}

    for name in ("general", "domain"):
        docs, stats = clean_corpus(name, getattr(cfg.data, name), cfg, lang, samples)
        splits[name] = {"train": [], "heldout": []}
        for t in docs:
            splits[name]["heldout" if is_heldout(t, cfg.heldout_fraction, cfg.seed) else "train"].append({"text": t})
        metrics[name] = stats

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

    instructions = [{"messages": normalize_messages(r["messages"])} for r in read_instructions(cfg.data.instructions)]
    instructions = dedup_records("instructions", instructions, lambda r: str(r["messages"]))
    preferences = [{"prompt": normalize_messages(r["prompt"]), "chosen": normalize(r["chosen"]),
                    "rejected": normalize(r["rejected"])} for r in read_preferences(cfg.data.preferences)]
    preferences = dedup_records("preferences", preferences, lambda r: str(r["prompt"]) + r["chosen"] + r["rejected"])
    for name, records, msgs in (("instructions", instructions, lambda r: r["messages"]),
                                ("preferences", preferences, lambda r: r["prompt"])):
        splits[name] = {"train": [], "heldout": []}
        for rec in records:
            held = is_heldout(task_key(msgs(rec)), cfg.task_heldout_fraction, cfg.seed)
            splits[name]["heldout" if held else "train"].append(rec)

    # Decontaminate: no training record may contain a held-out example (a held-out document's
    # paragraph, or the subject of a held-out task prompt).
    heldout_keys = set()
    for split in splits.values():
        for rec in split["heldout"]:
            heldout_keys |= paragraphs(rec["text"]) if "text" in rec else {task_key(rec.get("messages") or rec["prompt"])}
    for name, split in splits.items():
        before = len(split["train"])
        split["train"] = [r for r in split["train"] if not paragraphs(record_text(r)) & heldout_keys]
        metrics[name]["dropped"]["contains_heldout"] = before - len(split["train"])

    with atomic_dir(OUT_DIR) as tmp:
        for name, split in splits.items():
            for part, rows in split.items():
                write_jsonl(tmp / f"{name}.{part}.jsonl", rows)
        write_jsonl(tmp / "dropped_samples.jsonl", samples)
    for name, split in splits.items():
        m = metrics[name]
        m["train"], m["heldout"] = len(split["train"]), len(split["heldout"])
        m["docs_out"] = m["train"] + m["heldout"]
        if "text" in (split["train"] or [{}])[0]:
            m["bytes_out"] = sum(len(r["text"].encode("utf-8")) for s in split.values() for r in s)
    metrics["docs_in"] = sum(metrics[n]["docs_in"] for n in splits)
    metrics["docs_out"] = sum(metrics[n]["docs_out"] for n in splits)
    write_json(METRICS, metrics)
    tracking.log_artifact(OUT_DIR / "dropped_samples.jsonl", "samples")
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("clean", Config, run)


if __name__ == "__main__":
    main()
