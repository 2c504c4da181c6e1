"""A generated web-crawl-like corpus for the cleaning benchmarks and the large-corpus check.

Documents mix the page types a crawl holds, in fixed proportions: articles (with contractions, hyphens,
numbers, quotes, citations), forum posts, navigation and cookie boilerplate around articles, bullet lists,
spam with repeated lines and n-grams, code with curly brackets, lorem ipsum, hashtag and ellipsis pages,
number tables, very short pages, PII. Many sit near a published threshold, so the filters' decisions are
not trivially agreed on. `planted_near_duplicates` makes pairs at a known word 5-gram Jaccard similarity.

    python -m pipelines.web_corpus --out data/web --docs 100000 --shards 8
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

STOP = ["the", "be", "to", "of", "and", "that", "have", "with", "a", "in", "is", "it", "for", "on", "as", "was",
        "at", "by", "this", "from", "or", "an", "but", "not", "are", "we", "they", "you", "can", "will"]
ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl",
          "gr", "ch", "sh", "br", "cl"]
NUCLEI = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io"]
CODAS = ["", "n", "r", "s", "t", "l", "nd", "st", "ck", "ng", "m"]
CONTRACTIONS = ["don't", "it's", "we're", "can't", "they've", "isn't", "I'm", "you'll", "won't", "that's"]
BOILER = ["Home | About | Contact | Blog", "Accept all cookies", "This website uses cookies to improve your experience.",
          "Read our privacy policy and terms of use.", "Share this:", "Posted by admin", "Log in", "Sign up",
          "Please enable JavaScript to view the comments.", "Copyright 2024. All rights reserved.", "Menu",
          "Skip to content", "Related posts", "Leave a reply", "Next page >>"]
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."
FOREIGN = ["Die Stadt liegt am Fluss und ist für ihre alten Brücken bekannt, und viele Menschen arbeiten dort.",
           "La ville se trouve au bord de la rivière et elle est connue pour son marché et ses vieilles maisons.",
           "La ciudad está junto al río y es famosa por su mercado semanal, y muchas personas trabajan allí."]


class Words:
    """A Zipf-weighted made-up vocabulary with English stop words mixed in at realistic rates."""

    def __init__(self, rng: random.Random, size: int = 6000):
        vocab = set()
        while len(vocab) < size:
            n = rng.choice([1, 2, 2, 3, 3, 4])
            vocab.add("".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(n)))
        self.vocab = sorted(vocab)
        rng.shuffle(self.vocab)
        weights = [1.0 / (i + 10) for i in range(size)]
        self.cum = []
        total = 0.0
        for w in weights:
            total += w
            self.cum.append(total)

    def sample(self, rng: random.Random, k: int) -> list[str]:
        out = rng.choices(self.vocab, cum_weights=self.cum, k=k)
        for i in range(k):
            r = rng.random()
            if r < 0.38:
                out[i] = rng.choice(STOP)
            elif r < 0.40:
                out[i] = rng.choice(CONTRACTIONS)
            elif r < 0.415:
                out[i] = f"{out[i]}-{rng.choice(self.vocab)}"
            elif r < 0.43:
                out[i] = str(rng.randint(1, 2030))
        return out


def sentence(rng: random.Random, words: Words, lo: int = 6, hi: int = 24) -> str:
    w = words.sample(rng, rng.randint(lo, hi))
    w[0] = w[0].capitalize()
    if len(w) > 8 and rng.random() < 0.4:
        w[rng.randrange(2, len(w) - 2)] += ","
    if rng.random() < 0.05:
        w[-1] += f" ({rng.choice(words.vocab)})"
    end = rng.choices([".", "?", "!", "...", ".\"", "", ":"], weights=[80, 5, 4, 3, 2, 4, 2])[0]
    if rng.random() < 0.03:
        end += f"[{rng.randint(1, 40)}]"
    return " ".join(w) + end


def paragraph(rng: random.Random, words: Words, lo: int = 2, hi: int = 7) -> str:
    return " ".join(sentence(rng, words) for _ in range(rng.randint(lo, hi)))


def article(rng: random.Random, words: Words) -> str:
    paras = [paragraph(rng, words) for _ in range(rng.randint(1, 9))]
    if rng.random() < 0.3:
        paras.insert(0, " ".join(words.sample(rng, rng.randint(2, 7))).title())
    return "\n\n".join(paras) if rng.random() < 0.7 else "\n".join(paras)


def document(rng: random.Random, words: Words) -> str:
    kind = rng.random()
    if kind < 0.45:
        return article(rng, words)
    if kind < 0.55:  # article inside navigation and cookie boilerplate
        top = "\n".join(rng.sample(BOILER, rng.randint(1, 5)))
        bottom = "\n".join(rng.sample(BOILER, rng.randint(1, 5)))
        return f"{top}\n{article(rng, words)}\n{bottom}"
    if kind < 0.61:  # forum thread: short lines, some without punctuation
        return "\n".join(sentence(rng, words, 2, 14) for _ in range(rng.randint(3, 25)))
    if kind < 0.66:  # bullet list
        mark = rng.choice(["- ", "• ", "* "])
        items = [mark + " ".join(words.sample(rng, rng.randint(2, 12))) for _ in range(rng.randint(4, 30))]
        return "\n".join(([paragraph(rng, words, 1, 2)] if rng.random() < 0.5 else []) + items)
    if kind < 0.72:  # spam: repeated lines, paragraphs or phrases
        base = [sentence(rng, words) for _ in range(rng.randint(1, 6))]
        lines = [rng.choice(base) for _ in range(rng.randint(4, 30))]
        if rng.random() < 0.5:
            lines += [paragraph(rng, words) for _ in range(rng.randint(1, 6))]
            rng.shuffle(lines)
        return "\n".join(lines) if rng.random() < 0.5 else " ".join(lines)
    if kind < 0.75:  # code
        fn = rng.choice(words.vocab)
        body = "\n".join(f"    {rng.choice(words.vocab)} = {rng.choice(words.vocab)}({rng.randint(0, 99)});"
                         for _ in range(rng.randint(2, 12)))
        return f"{paragraph(rng, words, 1, 3)}\nfunction {fn}() {{\n{body}\n}}\n{paragraph(rng, words, 0, 3)}"
    if kind < 0.77:
        return f"{article(rng, words)}\n{LOREM}"
    if kind < 0.80:  # hashtags / ellipses
        sep = rng.choice([" #", "... ", " … "])
        return sep.join(sentence(rng, words, 2, 9) for _ in range(rng.randint(5, 40)))
    if kind < 0.83:  # number table
        return "\n".join(" ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 9)))
                         for _ in range(rng.randint(3, 30)))
    if kind < 0.88:  # short page
        return paragraph(rng, words, 1, 3)
    if kind < 0.90:
        return rng.choice(FOREIGN) + " " + rng.choice(FOREIGN)
    if kind < 0.93:  # contact page with PII
        return (article(rng, words) + f"\nWrite to {rng.choice(words.vocab)}@example.org or call "
                f"+1 555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}. Server 10.0.{rng.randint(0, 255)}.7 is up.")
    return "\n\n".join(paragraph(rng, words, 3, 9) for _ in range(rng.randint(3, 12)))  # long article


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = Words(random.Random(1234))
    return [document(rng, words) for _ in range(n)]


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def edit_to_jaccard(rng: random.Random, words: Words, text: str, target: float, n: int = 5) -> tuple[str, float]:
    """Replace words of `text` one at a time until its 5-gram Jaccard with the original drops to `target`."""
    tokens = text.split()
    order = list(range(len(tokens)))
    rng.shuffle(order)
    current, j = text, 1.0
    for i in order:
        tokens[i] = rng.choice(words.vocab)
        candidate = " ".join(tokens)
        cj = jaccard(text, candidate, n)
        if cj < target and current != text:  # at least one edit: a copy is never exact
            break
        current, j = candidate, cj
    return current, j


def planted_near_duplicates(n_base: int, seed: int = 0, lo: float = 0.8, hi: float = 1.0,
                            negatives: float = 0.3) -> tuple[list[str], list[int], list[float]]:
    """Base articles plus one edited copy each at a Jaccard drawn from [lo, hi).

    Also `negatives` x n_base pairs edited to [0.3, 0.6): related but not near-duplicate, for precision.
    Returns (texts, family id per text, planted Jaccard per text; 1.0 for originals)."""
    rng = random.Random(seed)
    words = Words(random.Random(1234))
    texts, family, sims = [], [], []
    for f in range(n_base):
        base = "\n\n".join(paragraph(rng, words, 4, 8) for _ in range(rng.randint(2, 5)))
        texts.append(base)
        family.append(f)
        sims.append(1.0)
        copy, j = edit_to_jaccard(rng, words, base, rng.uniform(lo, hi))
        texts.append(copy)
        family.append(f)
        sims.append(j)
    for k in range(int(n_base * negatives)):
        base = "\n\n".join(paragraph(rng, words, 4, 8) for _ in range(rng.randint(2, 5)))
        far, j = edit_to_jaccard(rng, words, base, rng.uniform(0.3, 0.6))
        fid = n_base + 2 * k  # different families: a match between them is a false positive
        texts += [base, far]
        family += [fid, fid + 1]
        sims += [1.0, j]
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [family[i] for i in order], [sims[i] for i in order]


def write_shards(out: Path, n_docs: int, shards: int, seed: int = 0, target_bytes: int | None = None) -> list[Path]:
    """JSONL shards of generated documents; stops at `n_docs` or, if given, `target_bytes` of text."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = Words(random.Random(1234))
    files = [open(out / f"web-{i:04d}.jsonl", "w", encoding="utf-8") for i in range(shards)]
    written = 0
    try:
        for i in range(n_docs):
            text = document(rng, words)
            files[i % shards].write(json.dumps({"text": text, "id": f"web-{i}"}, ensure_ascii=False) + "\n")
            written += len(text.encode("utf-8"))
            if target_bytes and written >= target_bytes:
                break
    finally:
        for f in files:
            f.close()
    return [Path(f.name) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--bytes", type=float, default=None, help="stop at this many bytes of text (e.g. 1e9)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    files = write_shards(args.out, args.docs if not args.bytes else 10**9, args.shards, args.seed,
                         int(args.bytes) if args.bytes else None)
    print(f"wrote {len(files)} shards to {args.out}")


if __name__ == "__main__":
    main()
