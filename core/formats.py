"""Readers for the inputs users bring, normalised to the project's canonical records.

corpus        -> {"text": str}
instructions  -> {"messages": [{"role", "content"}, ...]}   (last message is the assistant's answer)
preferences   -> {"prompt": [messages], "chosen": str, "rejected": str}

Every reader names the file (and line, where there is one) when it cannot make sense of the input.
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Iterator

from core.errors import InputError

ROLES = ("system", "user", "assistant")
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


# --------------------------------------------------------------------------- raw records
def _is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def _read_json_file(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield (location, row) from .json (array or object of rows) or .jsonl, either also gzipped (.gz)."""
    compressed = path.suffix.lower() == ".gz"
    try:
        raw = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: unreadable gzip file ({exc or type(exc).__name__})") from None
    if (Path(path.stem).suffix if compressed else path.suffix).lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict):  # {"data": [...]} or similar single-key wrappers
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise InputError(f"{path}: expected a JSON array of records")
            data = lists[0]
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON array of records")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise InputError(f"{path}: record {i} is not a JSON object")
            yield f"{path}: record {i}", row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: invalid JSON line: {exc.msg}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield f"{path}:{lineno}", row


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputError(f"{path}: unreadable parquet file: {exc}") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}: row {i}", row


def _read_hf_dataset(spec: str) -> Iterator[tuple[str, dict]]:
    import datasets

    try:
        if Path(spec).is_dir():
            ds = datasets.load_from_disk(spec)
        else:  # a hub name: only works online, by design
            ds = datasets.load_dataset(spec.removeprefix("hf://"), split="train")
    except Exception as exc:
        raise InputError(f"{spec}: cannot load as a Hugging Face dataset: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    for i, row in enumerate(ds):
        yield f"{spec}: row {i}", row


def iter_rows(spec: str | Path) -> Iterator[tuple[str, dict]]:
    """Rows from a file, a directory of files, a saved HF dataset or `hf://name`."""
    spec_str = str(spec)
    if spec_str.startswith("hf://"):
        yield from _read_hf_dataset(spec_str)
        return
    path = Path(spec_str)
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if _is_hf_dataset_dir(path):
        yield from _read_hf_dataset(spec_str)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"{path}: directory holds no input files")
        for f in files:
            yield from iter_rows(f)
        return
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json") or "".join(path.suffixes[-2:]).lower() in (".jsonl.gz", ".json.gz"):
        yield from _read_json_file(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".txt", ".text", ".md"):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        # one document per blank-line-separated block
        for i, block in enumerate(re.split(r"\n\s*\n", text)):
            if block.strip():
                yield f"{path}: block {i}", {"text": block.strip()}
    else:
        raise InputError(f"{path}: unsupported format '{suffix or 'no extension'}' "
                         "(expected .txt, .jsonl, .json (optionally .gz), .parquet or a saved HF dataset)")


# --------------------------------------------------------------------------- corpus
def read_corpus(spec: str | Path) -> Iterator[str]:
    for where, row in iter_rows(spec):
        text = row.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: corpus record has no string 'text' field (keys: {sorted(row)})")
        yield text


# --------------------------------------------------------------------------- instructions
class RecordError(InputError):
    """A malformed record: the stage counts it (with file:line) and goes on, or stops on it when strict."""

    def __init__(self, kind: str, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.kind, self.where, self.detail = kind, where, detail


def _records(spec: str | Path, parse, on_problem) -> Iterator[dict]:
    for where, row in iter_rows(spec):
        try:
            yield parse(where, row)
        except RecordError as exc:
            if on_problem is None:
                raise
            on_problem({"kind": exc.kind, "where": exc.where, "detail": exc.detail})


def _messages(where: str, value: object) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RecordError("bad_messages", where, "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError("bad_messages", where, f"message {i} needs a role in {ROLES} and string content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def instruction_record(where: str, row: dict) -> dict:
    if "messages" in row:
        messages = _messages(where, row["messages"])
    elif "instruction" in row and "output" in row:
        user = str(row["instruction"]).strip()
        extra = row.get("input") or ""
        if str(extra).strip():
            user = f"{user}\n\n{str(extra).strip()}"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": str(row["output"]).strip()}]
    elif "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]  # plain strings, or TRL's conversational lists
        prompt = _messages(where, prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        if isinstance(completion, list):
            completion = _messages(where, completion)[-1]["content"]
        messages = prompt + [{"role": "assistant", "content": str(completion)}]
    else:
        raise RecordError("missing_field", where, "not an instruction record: expected Alpaca "
                          "'instruction'/'input'/'output', chat 'messages' or 'prompt'/'completion' "
                          f"(keys: {sorted(row)})")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise RecordError("empty_answer", where, "the last message must be a non-empty assistant answer")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages[:-1]):
        raise RecordError("missing_prompt", where, "no user message before the answer")
    return {"messages": messages}


def read_instructions(spec: str | Path, on_problem=None) -> Iterator[dict]:
    """Canonical {"messages": [...]} records; a malformed row raises RecordError, or with `on_problem` is
    passed to it as {kind, where, detail} and skipped."""
    return _records(spec, instruction_record, on_problem)


# --------------------------------------------------------------------------- preferences
def parse_hh(where: str, text: str) -> list[dict]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> chat messages."""
    if not isinstance(text, str):
        raise RecordError("bad_conversation", where, "conversation must be a string")
    parts = HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0].strip() or len(parts) < 3:
        raise RecordError("bad_conversation", where, "not a '\\n\\nHuman: ... \\n\\nAssistant: ...' conversation")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def preference_record(where: str, row: dict) -> dict:
    if not ("chosen" in row and "rejected" in row):
        raise RecordError("missing_field", where, "not a preference record: expected "
                          "'prompt'/'chosen'/'rejected' or whole 'chosen'/'rejected' conversations "
                          f"(keys: {sorted(row)})")
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        else:
            prompt = _messages(where, prompt)

        def answer(value: object, name: str) -> str:
            if isinstance(value, list):  # conversational: [{"role": "assistant", "content": ...}]
                value = _messages(where, value)[-1]["content"]
            if not isinstance(value, str):
                raise RecordError("bad_answer", where, f"'{name}' must be a string or a list of messages")
            return value.strip()

        chosen, rejected = answer(chosen, "chosen"), answer(rejected, "rejected")
    else:  # whole conversations that share everything but the final answer
        c, r = parse_hh(where, chosen), parse_hh(where, rejected)
        if c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
            raise RecordError("bad_conversation", where, "conversations must end with an Assistant turn")
        if c[:-1] != r[:-1]:
            raise RecordError("bad_conversation", where,
                              "chosen and rejected conversations differ before the final answer")
        prompt, chosen, rejected = c[:-1], c[-1]["content"], r[-1]["content"]
    if not chosen or not rejected:
        raise RecordError("empty_answer", where, "empty chosen or rejected answer")
    if chosen == rejected:
        raise RecordError("identical_answers", where, "chosen and rejected answers are identical")
    if not prompt or prompt[-1]["role"] != "user":
        raise RecordError("missing_prompt", where, "the prompt must end with a user turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def read_preferences(spec: str | Path, on_problem=None) -> Iterator[dict]:
    """Canonical {"prompt": [...], "chosen": str, "rejected": str} records; malformed rows as read_instructions."""
    return _records(spec, preference_record, on_problem)
