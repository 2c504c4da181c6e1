"""Fast drop-in versions of datatrove's Gopher repetition, Gopher quality, C4 and FineWeb filters.

Same parameters, same reasons, same decisions (the benchmark checks agreement on every document). Why they
are faster: datatrove's English word splitter runs spaCy's whole pipeline (tokenizer, then sentencizer) in a
fresh memory zone for each filter, and C4 does that again for every line. Here spaCy's tokenizer alone runs
once per text, its words are shared by the filters that read the same text, sentences are counted with the
sentencizer's rule over those tokens, and the n-gram repetition scan slices one joined string instead of
joining lists.
"""
from __future__ import annotations

import unicodedata
from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import PUNCTUATION_SET

# bounds on what tokenization keeps between texts, so memory stays flat however large the corpus
MEMO_CHUNKS = 50_000  # distinct whitespace-free chunks remembered
ZONE_CHUNKS = 20_000   # chunks tokenized in one spaCy memory zone before its vocabulary is dropped

WORD, PUNCT, SENTENCE_END = 0, 1, 2


class Tokens:
    """spaCy's rule-based tokenizer for one language, without the pipeline around it.

    spaCy tokenizes each whitespace-free chunk of a text on its own (that is how its own cache works), so the
    words of a text are the concatenated words of its chunks; chunks are memoised here."""

    def __init__(self, language: str = "en"):
        import spacy
        from spacy.pipeline import Sentencizer

        self.nlp = spacy.blank(language)
        self.tokenizer = self.nlp.tokenizer
        self.sentence_ends = set(Sentencizer.default_punct_chars)
        self.memo: dict[str, tuple[list[str], list[int]]] = {}
        self._zone = None
        self._in_zone = 0
        self._last: tuple[str, list[str]] | None = None

    def _chunk(self, chunk: str) -> tuple[list[str], list[int]]:
        if len(self.memo) >= MEMO_CHUNKS:
            self.memo.clear()
        if self._zone is None or self._in_zone >= ZONE_CHUNKS:
            if self._zone is not None:
                self._zone.__exit__(None, None, None)
            self._zone = self.nlp.memory_zone()
            self._zone.__enter__()
            self._in_zone = 0
        self._in_zone += 1
        words, kinds = [], []
        for token in self.tokenizer(chunk):
            text = token.text.strip()
            if text:
                words.append(text)
                kinds.append(SENTENCE_END if text in self.sentence_ends else PUNCT if _is_punct(text) else WORD)
        self.memo[chunk] = entry = (words, kinds)
        return entry

    def words(self, text: str) -> list[str]:
        """datatrove's `split_into_words(text, "en")`: token texts, stripped, empties dropped."""
        if self._last is not None and self._last[0] is text:
            return self._last[1]
        memo, words = self.memo, []
        for chunk in text.split():
            entry = memo.get(chunk) or self._chunk(chunk)
            words += entry[0]
        self._last = (text, words)
        return words

    def remember(self, text: str, words: list[str]) -> None:
        self._last = (text, words)

    def sentences_and_words(self, line: str) -> tuple[int, list[str]]:
        """spaCy sentencizer's sentence count for `line`, and its words."""
        memo, words, kinds = self.memo, [], []
        for chunk in line.split():
            entry = memo.get(chunk) or self._chunk(chunk)
            words += entry[0]
            kinds += entry[1]
        n_sentences, seen_end = 0, False
        for i, kind in enumerate(kinds):
            if i == 0:
                n_sentences = 1
            elif seen_end and kind == WORD:
                n_sentences += 1
                seen_end = False
            if kind == SENTENCE_END:
                seen_end = True
        return n_sentences, words


def _is_punct(text: str) -> bool:  # spaCy's IS_PUNCT lexical attribute
    return all(unicodedata.category(c).startswith("P") for c in text)


_TOKENS: dict[str, Tokens] = {}


def tokens_for(language: str) -> Tokens:
    if language not in _TOKENS:
        _TOKENS[language] = Tokens(language)
    return _TOKENS[language]


# --------------------------------------------------------------------------- the decisions
def gopher_repetition(f: GopherRepetitionFilter, text: str, words_of) -> str | None:
    if not text:
        return "empty"
    paragraphs = f.paragraph_exp.split(text.strip())
    dup_paragraphs, dup_chars = find_duplicates(paragraphs)
    if f.dup_para_frac and dup_paragraphs / len(paragraphs) > f.dup_para_frac:
        return "dup_para_frac"
    if f.dup_para_char_frac and dup_chars / len(text) > f.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = f._line_splitter.split(text)
    dup_lines, dup_chars = find_duplicates(lines)
    if f.dup_line_frac and dup_lines / len(lines) > f.dup_line_frac:
        return "dup_line_frac"
    if f.dup_line_char_frac and dup_chars / len(text) > f.dup_line_char_frac:
        return "dup_line_char_frac"

    words = words_of(text)
    n_words, n_chars = len(words), len(text)
    for n, frac in f.top_n_grams:
        if n_words < n:
            continue
        counts = Counter(zip(*(words[i:] for i in range(n))))
        # most_common(1) keeps the first-seen n-gram among ties, and so does max()
        top, count = max(counts.items(), key=lambda kv: kv[1])
        if (sum(map(len, top)) + n - 1) * count / n_chars > frac:
            return f"top_{n}_gram"

    # datatrove keys n-grams by "".join(words[i:i+n]); slicing one joined string gives the same keys
    joined = "".join(words)
    offsets = [0]
    for w in words:
        offsets.append(offsets[-1] + len(w))
    for n, frac in f.dup_n_grams:
        seen: set[str] = set()
        repeated, i, last = 0, 0, n_words - n + 1
        while i < last:
            gram = joined[offsets[i]:offsets[i + n]]
            if gram in seen:
                repeated += len(gram)
                i += n
            else:
                seen.add(gram)
                i += 1
        if repeated / n_chars > frac:
            return f"duplicated_{n}_n_grams"
    return None


def gopher_quality(f: GopherQualityFilter, text: str, words_of) -> str | None:
    words = words_of(text)
    n_words = len(words)
    lengths = [len(w) for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    n_non_symbol = len(lengths)
    if f.min_doc_words and n_non_symbol < f.min_doc_words:
        return "gopher_short_doc"
    if f.max_doc_words and n_non_symbol > f.max_doc_words:
        return "gopher_long_doc"
    if not n_words:  # datatrove divides by zero here when min_doc_words is off
        return "gopher_short_doc"
    if n_non_symbol:  # np.mean of nothing is nan, and nan fails neither bound
        mean_length = sum(lengths) / n_non_symbol
        if f.min_avg_word_length and mean_length < f.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if f.max_avg_word_length and mean_length > f.max_avg_word_length:
            return "gopher_above_avg_threshold"
    if f.max_symbol_word_ratio and text.count("#") / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if f.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if f.max_bullet_lines_ratio and (
            sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > f.max_bullet_lines_ratio):
        return "gopher_too_many_bullets"
    if f.max_ellipsis_lines_ratio and (
            sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > f.max_ellipsis_lines_ratio):
        return "gopher_too_many_end_ellipsis"
    if f.max_non_alpha_words_ratio and (
            sum(any(c.isalpha() for c in w) for w in words) / n_words < f.max_non_alpha_words_ratio):
        return "gopher_below_alpha_threshold"
    if f.min_stop_words and len(f.stop_words.intersection(words)) < f.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def c4_quality(f: C4QualityFilter, text: str, tokens: Tokens, stats: Counter) -> tuple[str | None, str]:
    """(reason to drop or None, the text with failing lines removed). Counts line decisions in `stats`."""
    n_sentences, kept, kept_words = 0, [], []
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        stats["line-total"] += 1
        if f.max_word_length != -1 and any(len(w) > f.max_word_length for w in words):
            stats["line-filter-too_long_word"] += 1
            continue
        if f.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            stats["line-filter-no_terminal_punc"] += 1
            continue
        if len(words) < f.min_words_per_line:
            stats["line-filter-too_few_words"] += 1
            continue
        low = line.lower()
        if f.filter_lorem_ipsum and "lorem ipsum" in low:
            return "lorem_ipsum", text
        if f.filter_javascript and "javascript" in low:
            stats["line-filter-javascript"] += 1
            continue
        if f.filter_curly_bracket and "{" in line:
            return "curly_bracket", text
        if f.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
            stats["line-filter-policy"] += 1
            continue
        count, line_words = tokens.sentences_and_words(line)
        if f.min_num_sentences != -1:
            n_sentences += count
        kept.append(line)
        kept_words.extend(line_words)
        stats["line-kept"] += 1
    if n_sentences < f.min_num_sentences:
        return "too_few_sentences", text
    new_text = "\n".join(kept).strip()
    # spaCy never joins tokens across a newline, so the kept lines' words are the new text's words
    tokens.remember(new_text, kept_words)
    return None, new_text


def fineweb_quality(f: FineWebQualityFilter, text: str, words_of) -> str | None:
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return "empty"
    ratio = sum(1 for line in lines if line.endswith(f.stop_chars)) / len(lines)
    if ratio < f.line_punct_thr and not (ratio == 0 and f.line_punct_exclude_zero):
        return "line_punct_ratio"
    if sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines) > f.short_line_threshold:
        return "short_line_ratio"
    if find_duplicates(lines)[1] / len(text.replace("\n", "")) > f.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / len(words_of(text)) > f.new_line_ratio:
        return "list_ratio"
    return None


# --------------------------------------------------------------------------- datatrove blocks
def _result(reason: str | None) -> bool | tuple[bool, str]:
    return True if reason is None else (False, reason)


class FastGopherRepetitionFilter(GopherRepetitionFilter):
    name = "👯 Gopher Repetition (fast)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return _result(gopher_repetition(self, doc.text, tokens_for(self.language).words))


class FastGopherQualityFilter(GopherQualityFilter):
    name = "🥇 Gopher Quality (fast)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return _result(gopher_quality(self, doc.text, tokens_for(self.language).words))


class FastC4QualityFilter(C4QualityFilter):
    name = "⛰ C4 Quality (fast)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.split_paragraph:
            raise ValueError("FastC4QualityFilter supports split_paragraph=True (C4's own setting) only")

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        stats: Counter = Counter()
        reason, text = c4_quality(self, doc.text, tokens_for(self.language), stats)
        for key, value in stats.items():
            self.stat_update(key, value=value)
        if reason is None:
            doc.text = text
        return _result(reason)


class FastFineWebQualityFilter(FineWebQualityFilter):
    name = "🍷 FineWeb Quality (fast)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return _result(fineweb_quality(self, doc.text, tokens_for(self.language).words))


def sanity_reason(text: str, min_chars: int, min_words: int, max_junk_char_ratio: float) -> str | None:
    """Why a document is junk in any genre (books, code, math, chat), or None: too short, binary or undecodable
    bytes (replacement and private-use characters), mojibake that Unicode repair could not undo."""
    if len(text) < min_chars:
        return "too_short"
    if len(text.split()) < min_words:
        return "too_few_words"
    junk = sum(c == "\ufffd" or unicodedata.category(c) in ("Co", "Cs", "Cn") for c in text)
    if junk / len(text) > max_junk_char_ratio:
        return "binary_or_undecodable"
    import ftfy.badness

    if ftfy.badness.is_bad(text[:10_000]):
        return "mojibake"
    return None


class SanityFilter(BaseFilter):
    """The curated preset's only quality filter: what is junk whatever the genre (no web-prose statistics)."""
    name = "🩺 Sanity"

    def __init__(self, min_chars: int, min_words: int, max_junk_char_ratio: float, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.min_words, self.max_junk = min_chars, min_words, max_junk_char_ratio

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = sanity_reason(doc.text, self.min_chars, self.min_words, self.max_junk)
        return True if reason is None else (False, reason)
