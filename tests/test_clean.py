import json

import pytest

from pipelines import sample_data
from stages import clean


def cfg(**kw):
    data = {"general": "g", "domain": "d", "instructions": "i", "preferences": "p"}
    return clean.Config(data=data, **kw)


GOOD = "The town is known for its old bridges and the market that opens with the first light of day."


@pytest.mark.parametrize("text,reason", [
    (GOOD, None),
    ("too few words here", "too_short"),
    ("a b c d e f g h i j k l m n o p", "mean_word_length"),
    ("#tag the #tag of #tag and #tag to #tag with #tag that", "symbol_ratio"),
    ("1234 5678 9012 3456 7890 1122 3344 5566 7788 9900 the and", "alpha_ratio"),
    ("Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor", "stopwords"),
])
def test_quality_rules(text, reason):
    assert clean.quality_reason(text, cfg()) == reason


def test_normalize_and_boilerplate():
    assert clean.normalize("ﬁne  café\u200b\x07 text \n\n next ") == "fine café text\nnext"
    text, removed = clean.strip_boilerplate("Home | About | Contact\nReal text here.\nAccept all cookies", cfg().boilerplate_patterns)
    assert (text, removed) == ("Real text here.", 2)


def test_pii_redaction():
    text, n = clean.redact_pii("Mail ann.lee@example.com or call 555-123-4567; host 192.168.1.20 version 1.2.3")
    assert text == "Mail <EMAIL> or call <PHONE>; host <IP> version 1.2.3"
    assert n == 3


def test_language_filter():
    lang = clean.LanguageFilter("en", 0.65)
    assert lang.keep(GOOD)
    assert not lang.keep("Die Stadt liegt am Fluss und ist für ihre alten Brücken bekannt.")


def test_minhash_finds_planted_near_duplicates_only():
    import random

    rng = random.Random(0)
    base = [sample_data.general_doc(rng) + " " + sample_data.general_doc(rng) for _ in range(60)]
    near = [sample_data.near_duplicate(rng, t) for t in base[:20]]
    dups = clean.MinHasher(clean.MinHashConfig(), 0).duplicates(base + near)
    # LSH at 14x8 catches a pair at Jaccard 0.8 with p~0.92: most copies found, no original flagged
    assert set(dups) <= set(range(60, 80)) and len(dups) >= 17
    assert all(dups[i] == i - 60 for i in dups)


def test_split_is_stable_and_roughly_sized():
    keys = [f"doc {i}" for i in range(2000)]
    held = [k for k in keys if clean.is_heldout(k, 0.1, 0)]
    assert held == [k for k in keys if clean.is_heldout(k, 0.1, 0)]
    assert 150 < len(held) < 250


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("clean")
    files = sample_data.generate(root / "sample", seed=0, scale=0.15)
    old = os.getcwd()
    os.chdir(root)
    try:
        metrics = clean.run(cfg().model_copy(update={"data": clean.DataConfig(**{k: str(v) for k, v in files.items()})}))
    finally:
        os.chdir(old)
    return root, metrics


def test_clean_finds_planted_problems(cleaned):
    _, m = cleaned
    for corpus in ("general", "domain"):
        dropped = m[corpus]["dropped"]
        for reason in ("exact_duplicate", "near_duplicate", "boilerplate_only", "too_short", "language"):
            assert dropped.get(reason, 0) > 0, (corpus, reason, dropped)
        assert m[corpus]["pii_redactions"] > 0
        assert m[corpus]["docs_out"] < m[corpus]["docs_in"]
    assert m["docs_in"] == sum(m[k]["docs_in"] for k in ("general", "domain", "instructions", "preferences"))


def test_no_heldout_example_in_any_training_split(cleaned):
    root, _ = cleaned
    out = root / "data" / "clean"
    rows = {p.name: [json.loads(l) for l in p.read_text().splitlines()] for p in out.glob("*.jsonl")}
    heldout_keys, train_paragraphs = set(), set()
    for name, recs in rows.items():
        for r in recs:
            if name.endswith(".heldout.jsonl"):
                heldout_keys |= clean.paragraphs(r["text"]) if "text" in r else {clean.task_key(r.get("messages") or r["prompt"])}
            elif name.endswith(".train.jsonl"):
                train_paragraphs |= clean.paragraphs(clean.record_text(r))
    assert heldout_keys and train_paragraphs
    assert not heldout_keys & train_paragraphs
    # and no corpus text is lost to PII: nothing left that looks like an e-mail address
    assert not any("@example.com" in r.get("text", "") for recs in rows.values() for r in recs)
