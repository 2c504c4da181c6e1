import json
from pathlib import Path

import pytest

from core.errors import InputError
from core.formats import iter_rows, read_instructions, read_preferences
from core.readers import CorpusReader


def read_corpus(path, strict=True):
    """The clean stage's corpus reader (the first problem raises, as with clean.strict)."""
    reader = CorpusReader(str(path), problems_dir=str(Path(path).parent / ".problems"), strict=strict)
    return [doc.text for doc in reader.run()]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_corpus_plain_text_blocks(tmp_path):
    f = write(tmp_path / "c.txt", "first doc\nstill first\n\nsecond doc\n")
    assert list(read_corpus(f)) == ["first doc\nstill first", "second doc"]


def test_corpus_jsonl_json_parquet_and_directory(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "a.jsonl", '{"text": "a"}\n\n{"text": "b"}\n')
    write(tmp_path / "d" / "b.json", json.dumps([{"text": "c"}]))
    pq.write_table(pa.table({"text": ["d", "e"]}), tmp_path / "d" / "c.parquet")
    assert list(read_corpus(tmp_path / "d")) == ["a", "b", "c", "d", "e"]


def test_corpus_saved_hf_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["x", "y"]}).save_to_disk(str(tmp_path / "ds"))
    assert list(read_corpus(tmp_path / "ds")) == ["x", "y"]


@pytest.mark.parametrize("name,content,message", [
    ("missing.jsonl", None, "input not found"),
    ("empty.jsonl", "", "file is empty"),
    ("bad.jsonl", '{"text": "ok"}\n{not json}\n', "bad.jsonl:2: invalid JSON line"),
    ("list.jsonl", '["a"]\n', "list.jsonl:1: expected a JSON object"),
    ("notext.jsonl", '{"body": "a"}\n', "notext.jsonl:1: record has no string 'text' field"),
    ("data.csv", "text\na\n", "unsupported format '.csv'"),
    ("scalar.json", "5\n", "scalar.json: expected a JSON array of records"),
    ("string.json", '"text"\n', "string.json: expected a JSON array of records"),
])
def test_corpus_errors_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        list(read_corpus(path))


def test_invalid_utf8_is_named(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(InputError, match="latin.txt:1: not valid UTF-8"):
        list(read_corpus(path))


def test_instructions_alpaca_json_and_jsonl(tmp_path):
    rows = [{"instruction": "Add", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi", "input": "", "output": "hi"}]
    for f in (write(tmp_path / "a.json", json.dumps(rows)), write(tmp_path / "a.jsonl", "\n".join(map(json.dumps, rows)))):
        recs = list(read_instructions(f))
        assert recs[0]["messages"] == [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
        assert recs[1]["messages"][0]["content"] == "Say hi"


def test_instructions_chat_messages_and_prompt_completion(tmp_path):
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a"}]}
    pc = {"prompt": "q2", "completion": "a2"}
    recs = list(read_instructions(write(tmp_path / "c.jsonl", json.dumps(chat) + "\n" + json.dumps(pc))))
    assert recs[0]["messages"] == chat["messages"]
    assert recs[1]["messages"][-1] == {"role": "assistant", "content": "a2"}


@pytest.mark.parametrize("row,message", [
    ({"question": "q"}, "not an instruction record"),
    ({"instruction": "q", "output": "  "}, "non-empty assistant answer"),
    ({"messages": [{"role": "user", "content": "q"}]}, "non-empty assistant answer"),
    ({"messages": [{"role": "robot", "content": "q"}]}, "message 0 needs a role"),
])
def test_instruction_errors(tmp_path, row, message):
    with pytest.raises(InputError, match=f"i.jsonl:1: .*{message}"):
        list(read_instructions(write(tmp_path / "i.jsonl", json.dumps(row))))


def test_preferences_prompt_chosen_rejected(tmp_path):
    row = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    assert list(read_preferences(write(tmp_path / "p.jsonl", json.dumps(row)))) == [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": "good", "rejected": "bad"}]


def test_preferences_hh_rlhf_conversations(tmp_path):
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name?\n\nAssistant: Ada",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name?\n\nAssistant: no"}
    rec = next(read_preferences(write(tmp_path / "hh.jsonl", json.dumps(row))))
    assert rec["prompt"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "user", "content": "name?"}]
    assert (rec["chosen"], rec["rejected"]) == ("Ada", "no")


@pytest.mark.parametrize("row,message", [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": "q", "chosen": "", "rejected": "x"}, "empty chosen or rejected"),
    ({"prompt": "q", "rejected": "x"}, "not a preference record"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"}, "differ before the final"),
    ({"chosen": "no turns here", "rejected": "nor here"}, "not a '"),
])
def test_preference_errors(tmp_path, row, message):
    with pytest.raises(InputError, match=f"p.jsonl:1: .*{message}"):
        list(read_preferences(write(tmp_path / "p.jsonl", json.dumps(row))))


def test_conversational_prompt_completion(tmp_path):
    row = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
           "completion": [{"role": "assistant", "content": "a"}]}
    rec = next(read_instructions(write(tmp_path / "pc.jsonl", json.dumps(row))))
    assert rec["messages"] == row["prompt"] + row["completion"]


def test_malformed_rows_are_reported_with_file_line_and_kind_and_skipped(tmp_path):
    good_i = {"instruction": "q", "output": "a"}
    rows_i = [good_i, {"instruction": "q", "output": ""}, {"prompt": "q"}, {"messages": [{"role": "user"}]}, good_i]
    found = []
    recs = list(read_instructions(write(tmp_path / "i.jsonl", "\n".join(map(json.dumps, rows_i))), found.append))
    assert len(recs) == 2
    assert [(p["kind"], p["where"].rsplit("/", 1)[-1]) for p in found] == [
        ("empty_answer", "i.jsonl:2"), ("missing_field", "i.jsonl:3"), ("bad_messages", "i.jsonl:4")]
    rows_p = [{"prompt": "q", "chosen": "a", "rejected": "a"}, {"prompt": "q", "chosen": "a", "rejected": "b"},
              {"prompt": "q", "chosen": "", "rejected": "b"}, {"chosen": "x", "rejected": "y"}]
    found = []
    recs = list(read_preferences(write(tmp_path / "p.jsonl", "\n".join(map(json.dumps, rows_p))), found.append))
    assert len(recs) == 1
    assert [(p["kind"], p["where"].rsplit("/", 1)[-1]) for p in found] == [
        ("identical_answers", "p.jsonl:1"), ("empty_answer", "p.jsonl:3"), ("bad_conversation", "p.jsonl:4")]
    assert all(p["detail"] for p in found)


def test_file_level_errors_are_not_swallowed_by_counting(tmp_path):
    with pytest.raises(InputError, match="invalid JSON line"):
        list(read_instructions(write(tmp_path / "bad.jsonl", "{not json"), lambda p: None))


# --------------------------------------------------------------------------- public formats and field mapping
from core.formats import InputSpec  # noqa: E402
from tests import public_formats as pf  # noqa: E402


def test_gsm8k_mapped_in_params(tmp_path):
    spec = InputSpec(path=str(pf.gsm8k(tmp_path / "gsm8k.jsonl", n=5)), fields={"prompt": "question", "response": "answer"})
    records = list(read_instructions(spec))
    assert len(records) == 5
    first = pf.gsm8k_rows(5)[0]
    assert records[0]["messages"] == [{"role": "user", "content": first["question"]},
                                      {"role": "assistant", "content": first["answer"]}]


def test_mapping_names_the_missing_field_with_file_and_line(tmp_path):
    f = write(tmp_path / "q.jsonl", '{"question": "a", "answer": "#### 1"}\n{"question": "b"}\n')
    spec = InputSpec(path=str(f), fields={"prompt": "question", "response": "answer"})
    found = []
    assert len(list(read_instructions(spec, found.append))) == 1
    assert found == [{"kind": "missing_field", "where": f"{f}:2", "detail": found[0]["detail"]}]
    assert "no field 'answer' (mapped to 'response'" in found[0]["detail"]


def test_mapping_nested_and_joined_fields_and_a_system_field(tmp_path):
    f = write(tmp_path / "n.jsonl", json.dumps({"q": {"title": "Add", "body": "1 + 2?"}, "sys": "Be brief.",
                                               "a": {"text": "3"}}) + "\n")
    spec = InputSpec(path=str(f), fields={"prompt": ["q.title", "q.body"], "response": "a.text", "system": "sys"})
    assert list(read_instructions(spec)) == [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add\n\n1 + 2?"},
        {"role": "assistant", "content": "3"}]}]


def test_input_spec_from_a_bare_path_and_unknown_roles():
    assert InputSpec.model_validate("data/x.jsonl") == InputSpec(path="data/x.jsonl")
    with pytest.raises(InputError, match="data.instructions.fields: unknown role 'answer'"):
        InputSpec(path="x", fields={"answer": "a"}).check_roles("instructions", "data.instructions")


def test_alpaca_code_json_array(tmp_path):
    records = list(read_instructions(pf.alpaca_code(tmp_path / "code.json", n=6)))
    assert len(records) == 6
    assert records[0]["messages"][0]["content"].endswith("For example f0(1).")  # instruction + input
    assert records[0]["messages"][-1]["content"].startswith("def f0(x):\n    return x")


def test_sharegpt_conversations_with_a_system_turn(tmp_path):
    records = list(read_instructions(pf.sharegpt(tmp_path / "sg.jsonl", n=3)))
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][0]["content"] == "You are a careful assistant."
    bad = write(tmp_path / "bad.jsonl", json.dumps({"conversations": [{"from": "tool", "value": "x"}]}) + "\n")
    found = []
    assert list(read_instructions(bad, found.append)) == [] and found[0]["kind"] == "bad_messages"
    assert "ShareGPT's 'from'" in found[0]["detail"]


def test_openai_messages_with_a_system_turn(tmp_path):
    records = list(read_instructions(pf.openai_messages(tmp_path / "oa.jsonl", n=2)))
    assert [m["role"] for m in records[1]["messages"]] == ["system", "user", "assistant"]


def test_multi_turn_hh_rlhf_prompt_is_every_turn_before_the_last_answer(tmp_path):
    records = list(read_preferences(pf.hh_rlhf(tmp_path / "hh.jsonl", n=4)))
    assert len(records) == 4
    r = records[0]
    assert [m["role"] for m in r["prompt"]] == ["user", "assistant", "user"]
    assert r["prompt"][1]["content"] == "Of course, what is it?"
    assert r["chosen"].endswith(f"So the answer is {pf.gsm8k_rows(1, 0)[0]['answer'].rsplit('#### ', 1)[1]}.")


def test_sharegpt_and_trl_conversational_preferences(tmp_path):
    f = write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in [
        {"conversations": [{"from": "human", "value": "Hi?"}], "chosen": {"from": "gpt", "value": "Hello."},
         "rejected": {"from": "gpt", "value": "Go away."}},
        {"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
         "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]},
        {"q": "Hi?", "good": "Hello.", "bad": "Bye.", "sys": "Be kind."}]) + "\n")
    skipped = []
    rows = list(read_preferences(f, skipped.append))
    assert [p["where"].rsplit("/", 1)[-1] for p in skipped] == ["p.jsonl:3"]  # no known layout without a mapping
    assert rows == [{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "Go away."},
                    {"prompt": [{"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "No."}]
    spec = InputSpec(path=str(f), fields={"prompt": "q", "chosen": "good", "rejected": "bad", "system": "sys"})
    found = []
    mapped = list(read_preferences(spec, found.append))
    assert mapped == [{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
                       "chosen": "Hello.", "rejected": "Bye."}]
    assert [p["kind"] for p in found] == ["missing_field", "missing_field"]  # rows 1-2 lack the mapped fields


def test_saved_hf_dataset_with_a_split_and_a_mapping(tmp_path):
    import datasets

    rows = pf.gsm8k_rows(6)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:4]),
                          "test": datasets.Dataset.from_list(rows[4:])}).save_to_disk(str(tmp_path / "gsm8k"))
    spec = InputSpec(path=str(tmp_path / "gsm8k"), split="test", fields={"prompt": "question", "response": "answer"})
    assert [r["messages"][0]["content"] for r in read_instructions(spec)] == [r["question"] for r in rows[4:]]
    with pytest.raises(InputError, match="no split 'validation' \\(splits: train, test\\)"):
        list(read_instructions(spec.model_copy(update={"split": "validation"})))


def test_a_hub_input_is_refused_with_the_snapshot_commands_and_fetch_saves_one(tmp_path, monkeypatch):
    """DVC cannot track hf:// (and the hub may change under a name): the run names `lifecycle fetch` and the --set;
    fetch (here with the hub replaced by a local dataset: tests stay offline) saves a split that reads back."""
    import datasets

    from core.errors import ConfigError
    from pipelines import hub

    with pytest.raises(ConfigError) as err:
        hub.refuse_hub_inputs({"instructions": {"path": "hf://openai/gsm8k", "subset": "main", "split": "test"}})
    assert str(err.value).splitlines()[-2:] == [
        "  lifecycle fetch openai/gsm8k --subset main --split test",
        "  lifecycle run --set data.instructions.path=data/hub/openai__gsm8k__main__test"]
    rows = pf.gsm8k_rows(3)
    calls = []

    def load_dataset(name, subset, split):
        calls.append((name, subset, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.chdir(tmp_path)
    out = hub.fetch("openai/gsm8k", "main", "test")
    assert calls == [("openai/gsm8k", "main", "test")] and out == Path("data/hub/openai__gsm8k__main__test")
    spec = InputSpec(path=str(out), fields={"prompt": "question", "response": "answer"})
    assert [r["messages"][0]["content"] for r in read_instructions(spec)] == [r["question"] for r in rows]


def test_mapping_only_the_system_field_keeps_the_records_own_layout(tmp_path):
    f = write(tmp_path / "m.jsonl", json.dumps({"persona": "Be brief.", "messages": [
        {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}) + "\n")
    assert list(read_instructions(InputSpec(path=str(f), fields={"system": "persona"}))) == [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."}]}]
    with pytest.raises(InputError, match="only 'prompt' may list several fields"):
        InputSpec(path="x", fields={"response": ["a", "b"]}).check_roles("instructions", "data.instructions")


def test_preference_kind_and_reference_are_kept_when_present(tmp_path):
    from core.formats import InputSpec

    rows = [{"prompt": "Good?", "chosen": "yes", "rejected": "no", "kind": "correctness", "reference": "yes"},
            {"prompt": "Good?", "chosen": "yes", "rejected": "no"},
            {"q": "Good?", "good": "yes", "bad": "no", "label": "yes", "type": "style"}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    first, second = read_preferences(path)
    assert (first["kind"], first["reference"]) == ("correctness", "yes")
    assert "kind" not in second and "reference" not in second
    mapped = tmp_path / "mapped.jsonl"
    mapped.write_text(json.dumps(rows[2]) + "\n")
    spec = InputSpec(path=str(mapped), fields={"prompt": "q", "chosen": "good", "rejected": "bad", "reference": "label",
                                               "kind": "type"})
    (record,) = read_preferences(spec)
    assert (record["kind"], record["reference"], record["chosen"]) == ("style", "yes", "yes")


def test_corpus_and_record_readers_read_every_format_alike(tmp_path):
    """One reader of the file formats (core.formats.file_rows): the clean stage's corpus reader and the
    instruction/preference readers see the same rows in every format, and a directory's hidden files in neither."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    d = tmp_path / "d"
    d.mkdir()
    write(d / "a.txt", "one\nstill one\n\n\ntwo\n")
    (d / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "three"}\n\n{"text": "four"}\n'))
    (d / "c.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "five"}\n'))
    write(d / "d.json", json.dumps([{"text": "six"}]))
    write(d / "e.json", json.dumps({"data": [{"text": "seven"}, {"text": "eight"}]}, indent=2))
    write(d / "f.json", '{"text": "nine"}\n{"text": "ten"}\n')  # JSON lines named .json
    pq.write_table(pa.table({"text": ["eleven"]}), d / "g.parquet")
    write(d / "h.html", "<p>twelve</p>\n\n<p>still twelve</p>\n")
    write(d / ".hidden.jsonl", '{"text": "hidden"}\n')
    expected = ["one\nstill one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "<p>twelve</p>\n\n<p>still twelve</p>"]
    assert [row["text"] for _, row in iter_rows(d)] == expected
    assert read_corpus(d) == expected
