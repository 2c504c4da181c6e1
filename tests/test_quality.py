"""core.cleaning.quality's fast filters against datatrove's: every drop reason on a hand-made document, and identical
results (decision, reason, rewritten text) on tricky texts and on generated web documents.

Each hand-made case asserts its reason from datatrove's filter too, so a case is known to test what it claims.
"""
from __future__ import annotations

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)

from core.cleaning.quality import (FastC4QualityFilter, FastFineWebQualityFilter, FastGopherQualityFilter,
                          FastGopherRepetitionFilter)
from pipelines.web_corpus import documents

ORDER = ("gopher_repetition", "gopher_quality", "c4", "fineweb")  # the chain's order
FILTERS = {
    "datatrove": dict(zip(ORDER, (GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(),
                                  FineWebQualityFilter()))),
    "ours": dict(zip(ORDER, (FastGopherRepetitionFilter(), FastGopherQualityFilter(), FastC4QualityFilter(),
                             FastFineWebQualityFilter()))),
}


def outcome(impl: str, names: tuple[str, ...], text: str):
    """(filter result, text afterwards) of the named filters applied in order, stopping at the first drop.

    A drop reports which filter dropped it; an exception is an outcome too, so both sides must agree on it."""
    doc = Document(text=text, id="doc")
    for name in names:
        try:
            result = FILTERS[impl][name].filter(doc)
        except Exception as e:  # noqa: BLE001 - compared, not hidden
            return ("raised", name, type(e).__name__), None
        if result is not True:
            return (name, result), doc.text
    return True, doc.text


def result_of(impl: str, name: str, text: str):
    return outcome(impl, (name,), text)


# --------------------------------------------------------------------------- building blocks
CLEAN = (
    "The history of the city is long and full of surprises. It was founded on the banks of a wide river, "
    "and for centuries the water was the main road for trade.\n\n"
    "Merchants came from the north with furs and timber. They traded with farmers who brought grain, wine "
    "and cheese to the market that was held every week in the old square.\n\n"
    "In the nineteenth century the railway arrived, and the town grew quickly. New factories were built "
    "along the river, and workers moved in from the surrounding villages.\n\n"
    "Today the factories have closed, but the old buildings have been turned into museums, offices and "
    "apartments. Visitors walk along the river to see the bridges and the towers."
)
CLEAN_LINES = [line for line in CLEAN.split("\n") if line]
# distinct words with no stop word among them: filler that repeats nothing
FILLER = ("apple river stone garden window market silver forest harbor candle meadow lantern pepper castle "
          "valley mirror thunder pillow copper bridge island saddle rocket velvet falcon orchard canyon blanket "
          "compass glacier tunnel marble cactus violin summit feather jungle ladder magnet nectar oyster parrot "
          "quartz ribbon sailor timber umbrella vessel walnut yogurt zephyr anchor barrel cobalt dolphin ember "
          "fossil").split()
PARA = ("Merchants came from the north with furs and timber, and they traded with the farmers of the valley "
        "who brought grain, wine and cheese to the weekly market in the old square by the cathedral.")
SENTENCES = [s if s.endswith(".") else s + "." for s in CLEAN.replace("\n\n", " ").split(". ")]


def words_text(n: int, word_list: list[str]) -> str:
    return " ".join(word_list[i % len(word_list)] for i in range(n))


# --------------------------------------------------------------------------- one case per reason
GOPHER_REPETITION_CASES = {
    "empty": "",
    "dup_para_frac": f"{PARA}\n\n{PARA}\n\nA different closing paragraph ends the page here.",
    # one paragraph in four repeated (<= 0.3 of paragraphs) but it holds most of the characters
    "dup_para_char_frac": f"{PARA}\n\nShort note one.\n\nShort note two.\n\n{PARA}",
    "dup_line_frac": f"{PARA}\n{PARA}\nA different closing line ends the page here.",
    "dup_line_char_frac": f"{PARA}\nShort note one.\nShort note two.\n{PARA}",
    "top_2_gram": " ".join(["green apple"] * 20),
    # "alpha beta gamma" 5 times among unique filler: its 2-grams stay under 0.2, the 3-gram passes 0.18
    "top_3_gram": " ".join(f"alpha beta gamma {' '.join(FILLER[6 * i:6 * i + 6])}" for i in range(5)),
    "top_4_gram": " ".join(f"alpha beta gamma delta {' '.join(FILLER[10 * i:10 * i + 10])}" for i in range(4)),
    # the same 30 distinct words twice: every n-gram occurs at most twice, but the second half is all repeats
    "duplicated_5_n_grams": " ".join(FILLER[:30] + FILLER[:30]),
}

GOPHER_QUALITY_CASES = {
    "gopher_short_doc": "Too short to matter.",
    "gopher_below_avg_threshold": words_text(60, "we go to it as he is up by me so of".split()),
    "gopher_above_avg_threshold": words_text(60, ["internationalization", "counterrevolutionary", "the", "and"]),
    "gopher_too_many_hashes": CLEAN + " " + " ".join(f"#tag{i}" for i in range(20)),
    "gopher_too_many_ellipsis": " ... ".join(CLEAN.split(", ")) + " ... " + " ... ".join(FILLER[:20]),
    "gopher_too_many_bullets": "\n".join(f"- {s}" for s in SENTENCES),
    # 4 lines of 10 end with an ellipsis (> 0.3 of lines) while ellipses stay under 0.1 of words
    "gopher_too_many_end_ellipsis": "\n".join(s[:-1] + "..." if i < 4 else s for i, s in enumerate(SENTENCES + SENTENCES[:2])),
    "gopher_below_alpha_threshold": " ".join(f"{w} {1900 + i}" if i % 2 else w
                                             for i, w in enumerate(CLEAN.split()[:60])),
    "gopher_enough_stop_words": " ".join(FILLER) + " the end.",
}

C4_CASES = {
    "lorem_ipsum": CLEAN + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "curly_bracket": "The function returns {a} for every input.\n" + CLEAN,
    "too_few_sentences": "This is one sentence. This is another sentence.\nNo punctuation on this line",
}

FINEWEB_CASES = {
    "empty": "\n   \n\t\n",
    "line_punct_ratio": "\n".join(" ".join(FILLER[6 * i:6 * i + 6]) for i in range(10)),
    # lines end with a full stop, but 8 of 10 are at most 30 characters
    "short_line_ratio": "\n".join([PARA, CLEAN_LINES[0]] + [f"A short line {w}." for w in FILLER[:8]]),
    "char_dup_ratio": "\n".join(CLEAN_LINES + [CLEAN_LINES[1]]),
    # blank lines between one-line paragraphs of 4 long words: newline count over words passes 0.3
    "list_ratio": "\n\n".join(" ".join(FILLER[(8 * i + k) % len(FILLER)] + FILLER[(8 * i + k + 1) % len(FILLER)]
                                         for k in range(0, 8, 2)).capitalize() + "." for i in range(10)),
}

CASES = ([("gopher_repetition", r, t) for r, t in GOPHER_REPETITION_CASES.items()]
         + [("gopher_quality", r, t) for r, t in GOPHER_QUALITY_CASES.items()]
         + [("c4", r, t) for r, t in C4_CASES.items()]
         + [("fineweb", r, t) for r, t in FINEWEB_CASES.items()])


@pytest.mark.parametrize("impl", ["datatrove", "ours"])
@pytest.mark.parametrize("name,reason,text", CASES, ids=[f"{n}-{r}" for n, r, _ in CASES])
def test_reason(impl, name, reason, text):
    assert result_of(impl, name, text)[0] == (name, (False, reason))


@pytest.mark.parametrize("impl", ["datatrove", "ours"])
def test_clean_document_passes_every_filter(impl):
    for name in ORDER:
        assert result_of(impl, name, CLEAN) == (True, CLEAN if name != "c4" else CLEAN.replace("\n\n", "\n"))
    assert outcome(impl, ORDER, CLEAN) == (True, CLEAN.replace("\n\n", "\n"))


# C4 keeps the page but removes lines: no terminal punctuation, "javascript", policy phrases, too few words,
# an ending ellipsis, a word over 1000 characters; strips lines and citations
C4_REWRITE_IN = "\n".join([
    "Home | About | Contact",
    "The history of the city is long and full of surprises.",
    "It was founded on a wide river.[12] The water was the main road for trade.[citation needed]",
    "Please enable JavaScript to view the comments.",
    "   Merchants came from the north with furs and timber.   ",
    "Thanks everyone.",
    "Read our privacy policy and terms of use.",
    "See " + "x" * 1001 + " for details.",
    "Farmers brought grain, wine and cheese to the market[edit].",
    "And then the story went on...",
    "Today the old buildings are museums and offices!",
    "",
])
C4_REWRITE_OUT = "\n".join([
    "The history of the city is long and full of surprises.",
    "It was founded on a wide river. The water was the main road for trade.",
    "Merchants came from the north with furs and timber.",
    "Farmers brought grain, wine and cheese to the market.",
    "Today the old buildings are museums and offices!",
])


@pytest.mark.parametrize("impl", ["datatrove", "ours"])
def test_c4_rewrites_kept_text(impl):
    assert result_of(impl, "c4", C4_REWRITE_IN) == (True, C4_REWRITE_OUT)


# --------------------------------------------------------------------------- agreement on tricky texts
TRICKY_SNIPPETS = [
    "",
    " ",
    "\n",
    "\n\n\n",
    "   \t  \n \t",
    ".",
    "a",
    "Hello  world.  Double  spaces  everywhere,  even  here.",
    "Tabs\tbetween\twords.\tAnd\ttabs\tat\tthe\tend.\t",
    "“Curly quotes,” she said… then — after a pause – left. ‘Single ones’ too.",
    "Emoticons :) :-( ;) <3 :D and emoji 😀🎉👍🏽 are everywhere! Right? :P",
    "Visit https://example.com/path?x=1&y=2#frag or http://foo.bar/baz.html. Also www.example.org.",
    "Write to john.doe@example.org or jane_doe+tag@mail.co.uk for details.",
    "The U.S. and the U.K. signed it, e.g. in 1990, i.e. long ago. Dr. Smith et al. agreed, etc. Mr. Jones too.",
    "I don't know, you'll see, we're sure it's fine; y'all can't say they've won't. Rock 'n' roll!",
    "It cost $1,000,000.00, or 3.14% of 12,345 units at 10:30 p.m. on 2024-01-05.",
    "As shown before [12], and again [3][4], see also [edit] and [citation needed].",
    "Supercalifragilisticexpialidocious " * 3 + "x" * 1001 + " " + "y" * 200 + ".",
    "Really?! Yes!!! No... Maybe?? Okay. \"Quoted.\" 'Single.'",
    "Line one.\r\nLine two.\rLine three.\u2028Line four.\u0085Line five.\x0bLine six.\x0cLine seven.\x1cEnd.",
    "• bullet one\n• bullet two\n- dash item\n* star item\n1. numbered item",
    "### Heading\n#hashtag #another #third ... … ...",
    "{\"json\": [1, 2, 3], \"key\": {\"nested\": true}}",
    "javascript:void(0); Please enable JavaScript. We use cookies. Privacy Policy. Terms of Use.",
    "Lorem ipsum dolor sit amet.",
    "ALL CAPS SHOUTING ABOUT THE SALE AND THE PRICES THAT HAVE GONE DOWN WITH THE TIDE.",
    "Ünïcödé wörds: naïve café, Straße, Øresund, São Paulo, Zürich and Kraków.",
    "Mixed scripts: Москва и Санкт-Петербург, 東京都 と 大阪, القاهرة و الإسكندرية.",
    "Hyphen-ated well-known state-of-the-art words -- and double--dashes; semi;colons: colons.",
    "Trailing spaces.   \n   Leading spaces.\n\n\n\nMany blank lines.",
    "(Parenthesised sentence.) [Bracketed text.] <Angled text.> Done.",
    "Numbers: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20.",
    "...",
    "… … …",
    "- - - - -\n• • •\n# # #",
]


def tricky_texts() -> list[str]:
    """Each snippet alone, and inside a clean page (lines among its lines) so later checks are reached."""
    out = []
    for s in TRICKY_SNIPPETS:
        out.append(s)
        out.append(f"{CLEAN_LINES[0]}\n{s}\n{CLEAN_LINES[1]}\n{s} {CLEAN_LINES[2]}\n{CLEAN_LINES[3]}")
    return out


CONFIGS = [(n,) for n in ORDER] + [ORDER]
CONFIG_IDS = list(ORDER) + ["chain"]


def raised(result) -> bool:
    return isinstance(result[0], tuple) and result[0][0] == "raised"


def assert_agree(texts: list[str], names: tuple[str, ...]) -> None:
    diffs = []
    for i, text in enumerate(texts):
        ref, ours = outcome("datatrove", names, text), outcome("ours", names, text)
        if raised(ref) or raised(ours):  # both raising alike is two crashes, not agreement
            diffs.append(f"#{i} {text!r}: a filter raised: datatrove {ref!r}, ours {ours!r}")
        elif ref != ours:
            diffs.append(f"#{i} {text!r}: datatrove {ref!r} != ours {ours!r}")
    assert not diffs, f"{len(diffs)} of {len(texts)} differ:\n" + "\n".join(diffs[:5])


TRICKY = tricky_texts()


@pytest.mark.parametrize("names", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("i", range(len(TRICKY)))
def test_agreement_tricky(i, names):
    assert_agree([TRICKY[i]], names)


@pytest.fixture(scope="module")
def web_docs() -> list[str]:
    return documents(300, seed=7)


@pytest.mark.parametrize("names", CONFIGS, ids=CONFIG_IDS)
def test_agreement_web_corpus(web_docs, names):
    assert_agree(web_docs, names)


def test_web_corpus_reaches_many_reasons(web_docs):
    """The generated documents exercise many reasons, so agreement on them means something."""
    reasons = {outcome("datatrove", ORDER, t)[0] for t in web_docs}
    assert True in reasons and len(reasons) >= 8, reasons
