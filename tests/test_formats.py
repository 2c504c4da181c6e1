import json

import pytest

from core.errors import InputError
from core.formats import read_corpus, read_instructions, read_preferences


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
    ("notext.jsonl", '{"body": "a"}\n', "notext.jsonl:1: corpus record has no string 'text' field"),
    ("data.csv", "text\na\n", "unsupported format '.csv'"),
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
    with pytest.raises(InputError, match="latin.txt: not valid UTF-8"):
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
