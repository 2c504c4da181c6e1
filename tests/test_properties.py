"""Property tests (hypothesis) over the input-format readers: what they accept round-trips exactly; what they
reject, they reject with InputError naming the file, never with another exception."""
from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InputError
from core.formats import instruction_record, iter_rows, preference_record, read_instructions
from core.formats import RecordError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)  # any valid Unicode
json_value = st.recursive(st.none() | st.booleans() | st.integers() | text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=6)


def scratch(name: str) -> Path:
    return Path(tempfile.mkdtemp()) / name


def read_corpus(path: Path) -> list[str]:
    """The clean stage's corpus reader, stopping on the first problem (clean.strict)."""
    from core.readers import CorpusReader

    return [doc.text for doc in CorpusReader(str(path), str(path.parent / "problems"), strict=True).run()]


@SETTINGS
@given(st.lists(st.dictionaries(text, json_value, max_size=4), min_size=1, max_size=6), st.booleans())
def test_jsonl_objects_round_trip(rows, as_array):
    path = scratch("rows.json" if as_array else "rows.jsonl")
    path.write_text(json.dumps(rows) if as_array else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [row for _, row in iter_rows(path)] == rows


@SETTINGS
@given(st.lists(text.filter(lambda t: t.strip()), min_size=1, max_size=6))
def test_corpus_texts_round_trip_and_name_their_line(texts):
    path = scratch("corpus.jsonl")
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    assert list(read_corpus(path)) == texts
    assert [where for where, _ in iter_rows(path)] == [f"{path}:{i}" for i in range(1, len(texts) + 1)]


@SETTINGS
@given(st.binary(min_size=1, max_size=200), st.sampled_from([".jsonl", ".json", ".txt", ".parquet", ".jsonl.gz"]))
def test_arbitrary_bytes_give_rows_or_an_input_error_naming_the_file(data, suffix):
    path = scratch("blob" + suffix)
    path.write_bytes(data)
    try:
        rows = list(iter_rows(path))
    except InputError as exc:
        assert str(path) in str(exc)
        return
    assert all(isinstance(row, dict) for _, row in rows)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["instruction", "input", "output", "messages", "prompt", "completion",
                                        "other"]), json_value, max_size=4))
def test_instruction_rows_are_canonical_or_a_record_error(row):
    try:
        record = instruction_record("f.jsonl:1", row)
    except RecordError as exc:
        assert str(exc).startswith("f.jsonl:1: ")
        return
    messages = record["messages"]
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"].strip()
    assert instruction_record("f.jsonl:1", record) == record  # canonical records are a fixed point


nonblank = text.filter(str.strip)
valid_instruction = st.one_of(
    st.fixed_dictionaries({"instruction": nonblank, "output": nonblank}),
    st.fixed_dictionaries({"instruction": nonblank, "input": text, "output": nonblank}),
    st.fixed_dictionaries({"prompt": nonblank, "completion": nonblank}),
    st.builds(lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
              nonblank, nonblank))


@SETTINGS
@given(valid_instruction)
def test_well_formed_instruction_rows_are_accepted_whole(row):
    """The accepted branch above, by construction: every public shape gives one record holding its answer."""
    record = instruction_record("f.jsonl:1", row)
    answer = row.get("output") or row.get("completion") or row.get("messages", [{}, {}])[1].get("content")
    # Alpaca answers are stripped here, chat messages later by the clean stage's normalisation
    assert record["messages"][-1]["role"] == "assistant" and record["messages"][-1]["content"].strip() == answer.strip()
    assert instruction_record("f.jsonl:1", record) == record


@SETTINGS
@given(nonblank, nonblank, nonblank)
def test_well_formed_preference_rows_are_accepted_whole(prompt, chosen, rejected):
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if chosen.strip() == rejected.strip():
        return
    record = preference_record("p.jsonl:3", row)
    assert (record["chosen"], record["rejected"]) == (chosen.strip(), rejected.strip())
    assert record["prompt"][-1]["content"].strip() == prompt.strip()
    assert preference_record("p.jsonl:3", record) == record


@SETTINGS
@given(st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "messages", "other"]), json_value,
                       max_size=4))
def test_preference_rows_are_canonical_or_a_record_error(row):
    try:
        record = preference_record("p.jsonl:3", row)
    except RecordError as exc:
        assert str(exc).startswith("p.jsonl:3: ")
        return
    assert record["chosen"] != record["rejected"]
    assert preference_record("p.jsonl:3", record) == record


@SETTINGS
@given(st.lists(st.fixed_dictionaries({"instruction": text.filter(str.strip), "output": text.filter(str.strip)}),
                min_size=1, max_size=5))
def test_gzipped_instructions_read_like_plain_ones(rows):
    plain, packed = scratch("i.jsonl"), scratch("i.jsonl.gz")
    payload = "".join(json.dumps(r) + "\n" for r in rows).encode()
    plain.write_bytes(payload)
    packed.write_bytes(gzip.compress(payload))
    assert list(read_instructions(plain)) == list(read_instructions(packed))
