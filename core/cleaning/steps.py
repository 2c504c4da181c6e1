"""datatrove pipeline steps of the clean stage: normalisation and filters, PII redaction, the samples of what
was dropped, the held-out split with decontamination, and MinHash with verified candidate pairs.

Steps take plain values, not the stage's config: Ray and Slurm workers unpickle them by reference.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import SENTINEL
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

from core.cleaning.quality import tokens_for
from core.cleaning.text import HTML_HINT, html_to_text, is_heldout, ngram_hashes, normalize, redact_pii, stable_hash


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


def exact_key(doc: Document) -> str:
    return " ".join(doc.text.lower().split())


# one definition for the signature, find and filter passes: they must agree on what a duplicate is
EXACT_DEDUP = ExactDedupConfig(content_getter=exact_key, hash_config=HashConfig(precision=64))


class SplitWriter(PipelineStep):
    """Held-out or train by a stable hash; training documents sharing an n-gram with an eval set are dropped."""
    name = "✂️ Split + decontaminate"
    type = "💽 - WRITER"

    def __init__(self, out: str, heldout_fraction: float, seed: int, ngram: int, shard_max_mb: int,
                 eval_ngrams: str | None, samples: DropSampler):
        super().__init__()
        self.out, self.heldout_fraction, self.seed, self.ngram = out, heldout_fraction, seed, ngram
        self.shard_max_mb, self.eval_ngrams, self.samples = shard_max_mb, eval_ngrams, samples

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        eval_set = np.load(self.eval_ngrams) if self.eval_ngrams else None
        writers = {split: ParquetWriter(f"{self.out}/{split}", output_filename="${rank}.parquet",
                                        max_file_size=self.shard_max_mb * 2**20) for split in ("train", "heldout")}
        with writers["train"] as train, writers["heldout"] as heldout:
            for doc in data:
                if is_heldout(doc.text, self.heldout_fraction, self.seed):
                    heldout.write(doc, rank)
                    self.stat_update("heldout")
                    self.stat_update("bytes_out", value=len(doc.text.encode("utf-8")))
                    continue
                if eval_set is not None and eval_set.size:
                    hashes = ngram_hashes(doc.text, self.ngram)
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

    def __init__(self, out: str, heldout_fraction: float, seed: int, ngram: int):
        super().__init__()
        self.out, self.heldout_fraction, self.seed, self.ngram = out, heldout_fraction, seed, ngram

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        chunks = []
        for doc in data:
            if is_heldout(doc.text, self.heldout_fraction, self.seed):
                chunks.append(ngram_hashes(doc.text, self.ngram))
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


def heldout_fraction(filtered: Path, fraction: float, min_docs: int, max_docs: int, seed: int) -> float:
    """The held-out fraction for the documents in `filtered`: `fraction`, shrunk to keep at most `max_docs`,
    raised on small corpora to hold out at least `min_docs` (up to half the corpus): the split is by hash, so the
    threshold is read off the hashes."""
    files = sorted(filtered.glob("*.jsonl"))
    n = sum(sum(1 for _ in open(p, "rb")) for p in files)
    if max_docs and n * fraction > max_docs:
        fraction = max_docs / n
    want = min(math.ceil(min_docs * 1.25), n // 2)  # spare: dedup removes some later
    if want and n * fraction < 2 * want:
        keys = sorted(stable_hash(f"{seed}:{json.loads(line)['text']}") % 1_000_000
                      for p in files for line in open(p, encoding="utf-8"))
        fraction = max(fraction, min((keys[want - 1] + 1) / 1_000_000, 0.5))
    return fraction
