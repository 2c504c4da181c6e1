"""Readers for the inputs users bring, normalised to the project's canonical records.

corpus        -> {"text": str}
instructions  -> {"messages": [{"role", "content"}, ...]}   (last message is the assistant's answer)
preferences   -> {"prompt": [messages], "chosen": str, "rejected": str}

An input is a path (file, directory, saved HF dataset, `hf://name`) or an `InputSpec` mapping with the fields
that hold each role, as LLaMA-Factory's dataset columns do: `{path: gsm8k.jsonl, fields: {prompt: question,
response: answer}}`. Known layouts are recognised without a mapping: Alpaca, OpenAI `messages` (system turn
included), ShareGPT `conversations` (`from`/`value`), `prompt`/`completion`, `prompt`/`chosen`/`rejected`,
TRL's conversational pairs and hh-rlhf's whole multi-turn conversations (every turn before the last
Assistant turn is the prompt).

Every reader names the file (and line, where there is one) when it cannot make sense of the input.
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from pydantic import Field, model_validator

from core.config import StageConfig
from core.errors import InputError

ROLES = ("system", "user", "assistant")
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
# ShareGPT's `from` values (and a few common variants) -> chat roles
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
            "chatgpt": "assistant", "bot": "assistant", "system": "system"}
# the roles a field mapping may name, per kind of input, and the key each becomes in the row the parser reads
ROLE_KEYS = {"corpus": {"text": "text"},
             "instructions": {"prompt": "prompt", "response": "completion", "system": "system",
                              "messages": "messages"},
             "preferences": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system",
                             "kind": "kind", "reference": "reference"}}
# optional preference metadata kept through cleaning: `kind` (the reward model's held-out accuracy is reported per
# kind) and `reference` (the correct answer to the prompt, which a task's gold rule judges answers against)
PREFERENCE_META = ("kind", "reference")


class InputSpec(StageConfig):
    """One input of params.yaml `data`: a path, or a mapping with the fields that hold each role."""
    path: str = Field(min_length=1, description="file, directory, glob, saved HF dataset or hf://name")
    fields: dict[str, str | list[str]] = Field({}, description=(
        "role -> field name in the records (a.b for nested fields; a list of fields for a prompt joins them)"))
    subset: str | None = Field(None, description="HF datasets: the configuration (e.g. gsm8k's 'main')")
    split: str = Field("train", description="HF datasets: the split to read")

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value):
        return {"path": value} if isinstance(value, str) else value

    def check_roles(self, kind: str, key: str) -> None:
        unknown = sorted(set(self.fields) - set(ROLE_KEYS[kind]))
        if unknown:
            raise InputError(f"params.yaml: {key}.fields: unknown role {unknown[0]!r}; the roles of this input "
                             f"are {', '.join(ROLE_KEYS[kind])}")
        if any(isinstance(v, list) for r, v in self.fields.items() if r != "prompt"):
            raise InputError(f"params.yaml: {key}.fields: only 'prompt' may list several fields (joined by a blank "
                             "line)")


_MISSING = object()


def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by datasets' save_to_disk: a Dataset (state.json, dataset_info.json) or a DatasetDict."""
    return path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json",
                                                                      "state.json"))


def _field(row: dict, name: str) -> object:
    """row['a']['b'] for 'a.b' (a key holding the dot itself wins)."""
    if name in row:
        return row[name]
    node: object = row
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


# the fields a parser reads a layout from: a mapping that names a content role replaces them all
LAYOUT_KEYS = {"text", "messages", "conversations", "instruction", "input", "output", "prompt", "completion",
               "chosen", "rejected", "system"}


def map_fields(row: dict, fields: dict, kind: str, where: str) -> dict:
    """The row with its mapped fields under the names the parsers read; an absent field is a RecordError. Mapping
    only `system` keeps the row's own layout (e.g. OpenAI messages plus a system prompt from another field)."""
    if not fields:
        return row
    out = dict(row) if set(fields) == {"system"} else {k: v for k, v in row.items() if k not in LAYOUT_KEYS}
    for role, names in fields.items():
        values = []
        for name in names if isinstance(names, list) else [names]:
            value = _field(row, name)
            if value is _MISSING:
                raise RecordError("missing_field", where, f"no field {name!r} (mapped to '{role}' in params.yaml "
                                  f"data fields; the record's fields: {sorted(row)[:12]})")
            values.append(value)
        if isinstance(names, list):
            values = ["\n\n".join(str(v).strip() for v in values if v is not None and str(v).strip())]
        out[ROLE_KEYS[kind][role]] = values[0]
    return out


# --------------------------------------------------------------------------- files -> rows
# The one place that knows the file formats: the instruction and preference readers below and the clean stage's
# corpus reader (core/readers.py, on datatrove) read every file through `file_rows`.
TEXT_SUFFIXES = (".txt", ".text", ".md")  # one document per blank-line-separated block
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")  # JSON lines, or a JSON array (or {"key": [rows]}) of records
HTML_SUFFIXES = (".html", ".htm")  # one document per file, markup kept for the HTML-to-text step
SUPPORTED = TEXT_SUFFIXES + JSON_SUFFIXES + HTML_SUFFIXES + (".parquet",)
COMPRESSIONS = (".gz", ".zst")

# problem(kind, where, detail): the corpus reader counts it and goes on; the record readers stop on it
Problem = Callable[[str, str, str], None]


def suffixes(name: str) -> tuple[str, str]:
    """(format suffix, compression suffix) of a file name, e.g. ('.jsonl', '.gz')."""
    p = Path(name.lower())
    if p.suffix in COMPRESSIONS:
        return Path(p.stem).suffix, p.suffix
    return p.suffix, ""


def unsupported(name: str) -> str | None:
    """Why a file cannot be read, or None."""
    fmt, _ = suffixes(name)
    if fmt in SUPPORTED:
        return None
    return (f"unsupported format '{fmt or 'no extension'}' (expected one of {', '.join(SUPPORTED)}, optionally "
            f"{' or '.join(COMPRESSIONS)}, or a saved HF dataset)")


def split_spec(spec: str) -> tuple[str, str | None]:
    """(folder, glob pattern) of an input given as a file, a directory (no pattern) or a glob."""
    path = Path(spec)
    if any(c in spec for c in "*?["):
        parts = path.parts
        i = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
        return str(Path(*parts[:i])) if i else ".", str(Path(*parts[i:]))
    if path.is_file():
        return str(path.parent), path.name
    return spec, None


def input_files(spec: str) -> list[Path]:
    """The files of an input given as a file, a directory (recursively; hidden files left out) or a glob."""
    folder, pattern = split_spec(spec)
    if pattern is not None:
        return sorted(p for p in Path(folder).glob(pattern) if p.is_file())
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _lines(raw: BinaryIO, where: str, problem: Problem) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a possibly compressed stream; a truncated or corrupt stream ends with a problem."""
    lineno = 0
    try:
        for lineno, line in enumerate(raw, 1):
            yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        problem("truncated_or_corrupt", f"{where}:{lineno + 1}", f"compressed stream is truncated or corrupt after "
                f"line {lineno} ({type(exc).__name__}: {exc}); the rest of the file is lost")


def _decode(line: bytes, where: str, problem: Problem) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem("invalid_utf8", where, f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)")
        return None


def _json_rows(raw: io.BufferedIOBase, fmt: str, where: str, problem: Problem) -> Iterator[tuple[str, int, object]]:
    lines = _lines(raw, where, problem)
    first = next(((n, line) for n, line in lines if line.strip()), None)
    if first is None:
        return
    # .json: an array of records, or an object holding one ({"data": [rows]}) over many lines; else JSON lines
    whole = False
    if fmt == ".json":
        try:
            whole = not isinstance(json.loads(first[1]), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            whole = True
    if whole:  # a JSON document holding the records: small files only, read whole
        text = _decode(first[1] + b"".join(line for _, line in lines), where, problem)
        if text is None:
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problem("invalid_json", f"{where}:{first[0] + exc.lineno - 1}", f"invalid JSON: {exc.msg}")
            return
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else None
        if not isinstance(data, list):
            problem("invalid_json", where, "expected a JSON array of records (or an object holding one)")
            return
        for i, row in enumerate(data):
            yield f"{where}: record {i}", i, row
        return
    for lineno, line in itertools.chain([first], lines):
        if not line.strip():
            continue
        text = _decode(line, f"{where}:{lineno}", problem)
        if text is None:
            continue
        try:
            yield f"{where}:{lineno}", lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            problem("invalid_json", f"{where}:{lineno}", f"invalid JSON line: {exc.msg}")


def _text_rows(raw: io.BufferedIOBase, where: str, problem: Problem, html: bool) -> Iterator[tuple[str, int, dict]]:
    block, start, index = [], 1, 0
    for lineno, line in _lines(raw, where, problem):
        text = _decode(line, f"{where}:{lineno}", problem)
        if text is None:
            text = line.decode("utf-8", errors="replace")
        if not html and not text.strip():
            if block:
                yield f"{where}:{start}", index, {"text": "".join(block).strip(), "line": start}
                index += 1
            block, start = [], lineno + 1
            continue
        block.append(text)
    if "".join(block).strip():
        yield f"{where}:{start}", index, {"text": "".join(block).strip(), "line": start}


def _parquet_rows(f: BinaryIO, where: str, problem: Problem) -> Iterator[tuple[str, int, dict]]:
    import pyarrow.parquet as pq

    i = 0
    try:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield f"{where}: row {i}", i, row
                i += 1
    except Exception as exc:  # pyarrow raises many types for a damaged file
        if isinstance(exc, InputError):
            raise
        problem("corrupt_parquet", where, f"unreadable parquet file: {exc}")


def file_rows(f: BinaryIO, name: str, where: str, problem: Problem) -> Iterator[tuple[str, int, object]]:
    """(location, index, row) of one input file opened in binary mode, read by its extension (`name`). The index is
    the line of a JSON line, else the record's, block's or row's position; a row is what the file holds (a JSON
    record may be any value: the caller checks for an object); text blocks become {"text", "line"}. What cannot be read (unsupported format, empty file, invalid UTF-8, a bad JSON line, a truncated
    or corrupt compressed stream or parquet file) goes to `problem`."""
    fmt, compression = suffixes(name)
    if unsupported(name):
        problem("unsupported_file", where, unsupported(name))
        return
    if fmt == ".parquet":
        yield from _parquet_rows(f, where, problem)
        return
    if compression == ".gz":
        raw = gzip.GzipFile(fileobj=f)
    elif compression == ".zst":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(f)
    else:
        raw = f
    raw = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    try:
        empty = not raw.peek(1)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        problem("truncated_or_corrupt", f"{where}:1", f"unreadable compressed file ({type(exc).__name__}: {exc})")
        return
    if empty:
        problem("empty_file", where, "file is empty")
    elif fmt in JSON_SUFFIXES:
        yield from _json_rows(raw, fmt, where, problem)
    else:
        yield from _text_rows(raw, where, problem, html=fmt in HTML_SUFFIXES)


def load_hf_dataset(spec: str, subset: str | None = None, split: str = "train"):
    """A saved dataset directory, or `hf://name` from the hub (online only, by design), as one split."""
    import datasets

    try:
        if Path(spec).is_dir():
            ds = datasets.load_from_disk(spec)
        else:
            ds = datasets.load_dataset(spec.removeprefix("hf://"), subset, split=split)
    except Exception as exc:
        raise InputError(f"{spec}: cannot load as a Hugging Face dataset: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{spec}: no split {split!r} (splits: {', '.join(ds)}); set the input's `split`")
        ds = ds[split]
    return ds


def _stop(kind: str, where: str, detail: str) -> None:
    raise InputError(f"{where}: {detail}")


def iter_rows(spec: str | Path | InputSpec) -> Iterator[tuple[str, dict]]:
    """Rows from a file, a directory of files, a glob, a saved HF dataset or `hf://name` (fields not yet mapped);
    the first problem stops with an InputError naming the file and line."""
    if isinstance(spec, InputSpec):
        subset, split, spec = spec.subset, spec.split, spec.path
    else:
        subset, split = None, "train"
    spec_str = str(spec)
    if spec_str.startswith("hf://") or is_hf_dataset_dir(Path(spec_str)):
        for i, row in enumerate(load_hf_dataset(spec_str, subset, split)):
            yield f"{spec_str}: row {i}", row
        return
    files = input_files(spec_str)
    if not files:
        raise InputError(f"{spec_str}: input not found" if not Path(spec_str).is_dir() else
                         f"{spec_str}: directory holds no input files")
    for path in files:
        with open(path, "rb") as f:
            for where, _, row in file_rows(f, path.name, str(path), _stop):
                if not isinstance(row, dict):
                    raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
                yield where, row


# --------------------------------------------------------------------------- instructions
class RecordError(InputError):
    """A malformed record: the stage counts it (with file:line) and goes on, or stops on it when strict."""

    def __init__(self, kind: str, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.kind, self.where, self.detail = kind, where, detail


def _records(spec: str | Path | InputSpec, kind: str, parse, on_problem) -> Iterator[dict]:
    fields = spec.fields if isinstance(spec, InputSpec) else {}
    for where, row in iter_rows(spec):
        try:
            yield parse(where, map_fields(row, fields, kind, where))
        except RecordError as exc:
            if on_problem is None:
                raise
            on_problem({"kind": exc.kind, "where": exc.where, "detail": exc.detail})


def _messages(where: str, value: object) -> list[dict]:
    """OpenAI-style {role, content} or ShareGPT-style {from, value} turns -> chat messages."""
    if not isinstance(value, list) or not value:
        raise RecordError("bad_messages", where, "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(value):
        if isinstance(m, dict) and "from" in m and "value" in m and "role" not in m:
            m = {"role": SPEAKERS.get(str(m["from"]).lower(), m["from"]), "content": m["value"]}
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError("bad_messages", where, f"message {i} needs a role in {ROLES} (or ShareGPT's 'from' in "
                              f"{sorted(SPEAKERS)}) and string content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _with_system(where: str, row: dict, messages: list[dict]) -> list[dict]:
    system = row.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return messages
    if not isinstance(system, str):
        raise RecordError("bad_messages", where, "'system' must be a string")
    return [{"role": "system", "content": system.strip()}] + [m for m in messages if m["role"] != "system"]


def instruction_record(where: str, row: dict) -> dict:
    if "messages" in row or "conversations" in row:
        messages = _messages(where, row["messages"] if "messages" in row else row["conversations"])
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
                          "'instruction'/'input'/'output', chat 'messages', ShareGPT 'conversations' or "
                          f"'prompt'/'completion' (keys: {sorted(row)}); map other fields in params.yaml, e.g. "
                          "data.instructions: {path: ..., fields: {prompt: question, response: answer}}")
    messages = _with_system(where, row, messages)
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise RecordError("empty_answer", where, "the last message must be a non-empty assistant answer")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages[:-1]):
        raise RecordError("missing_prompt", where, "no user message before the answer")
    return {"messages": messages}


def read_instructions(spec: str | Path, on_problem=None) -> Iterator[dict]:
    """Canonical {"messages": [...]} records; a malformed row raises RecordError, or with `on_problem` is
    passed to it as {kind, where, detail} and skipped."""
    return _records(spec, "instructions", instruction_record, on_problem)


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


def _turn(value: object) -> object:
    """ShareGPT's single {from, value} answer -> its text."""
    return value["value"] if isinstance(value, dict) and "value" in value else value


def preference_record(where: str, row: dict) -> dict:
    if not ("chosen" in row and "rejected" in row):
        raise RecordError("missing_field", where, "not a preference record: expected "
                          "'prompt'/'chosen'/'rejected', ShareGPT 'conversations'/'chosen'/'rejected' or whole "
                          f"'chosen'/'rejected' conversations (keys: {sorted(row)}); map other fields in params.yaml, "
                          "e.g. data.preferences: {path: ..., fields: {prompt: question, chosen: good, rejected: bad}}")
    chosen, rejected = _turn(row["chosen"]), _turn(row["rejected"])
    if "prompt" in row or "conversations" in row:
        prompt = row["prompt"] if "prompt" in row else row["conversations"]
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
    else:  # whole conversations (hh-rlhf strings or TRL's message lists) sharing everything but the final answer
        if isinstance(chosen, list) and isinstance(rejected, list):
            c, r = _messages(where, chosen), _messages(where, rejected)
        else:
            c, r = parse_hh(where, chosen), parse_hh(where, rejected)
        if c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
            raise RecordError("bad_conversation", where, "conversations must end with an Assistant turn")
        if c[:-1] != r[:-1]:
            raise RecordError("bad_conversation", where,
                              "chosen and rejected conversations differ before the final answer")
        prompt, chosen, rejected = c[:-1], c[-1]["content"], r[-1]["content"]
    prompt = _with_system(where, row, prompt)
    if not chosen or not rejected:
        raise RecordError("empty_answer", where, "empty chosen or rejected answer")
    if chosen == rejected:
        raise RecordError("identical_answers", where, "chosen and rejected answers are identical")
    if not prompt or prompt[-1]["role"] != "user":
        raise RecordError("missing_prompt", where, "the prompt must end with a user turn")
    meta = {k: str(row[k]).strip() for k in PREFERENCE_META if isinstance(row.get(k), (str, int, float))}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **{k: v for k, v in meta.items() if v}}


def read_preferences(spec: str | Path, on_problem=None) -> Iterator[dict]:
    """Canonical {"prompt": [...], "chosen": str, "rejected": str} records; malformed rows as read_instructions."""
    return _records(spec, "preferences", preference_record, on_problem)
