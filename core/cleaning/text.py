"""Text functions of cleaning: normalisation, HTML to text, PII redaction, stable hashes and n-grams, the keys
task records are split and decontaminated by."""
from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

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
