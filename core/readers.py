"""A datatrove reader for corpora as users bring them, that never dies mid-corpus on a bad record.

Reads text (.txt/.md: one document per blank-line-separated block), JSONL and JSON arrays (plain or .gz/.zst
by extension), parquet, HTML files (.html/.htm: one document each, the markup kept for the HTML-to-text
block), saved Hugging Face datasets, and `hf://name` datasets. Each problem (invalid UTF-8, a truncated or
corrupt .gz, an empty file, a line that is not JSON or not an object, a missing or non-string `text`) is
counted under its kind and recorded with file and line in `<problems_dir>/<rank>.jsonl`; with `strict` the
first one stops the run with an InputError naming file and line.
"""
from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader

from core.errors import InputError
from core.formats import is_hf_dataset_dir

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
HTML_SUFFIXES = (".html", ".htm")
SUPPORTED = TEXT_SUFFIXES + JSON_SUFFIXES + HTML_SUFFIXES + (".parquet",)


def _suffixes(path: str) -> tuple[str, str]:
    """(format suffix, compression suffix) of a file name, e.g. ('.jsonl', '.gz')."""
    p = Path(path.lower())
    if p.suffix in (".gz", ".zst"):
        return Path(p.stem).suffix, p.suffix
    return p.suffix, ""


def n_input_files(path: str) -> int:
    """Input files of a corpus at `path` (a saved or hub HF dataset counts as one)."""
    if path.startswith("hf://") or is_hf_dataset_dir(Path(path)):
        return 1
    folder, pattern = split_spec(path)
    if pattern is None:
        return sum(1 for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return sum(1 for p in Path(folder).glob(pattern) if p.is_file())


def split_spec(spec: str) -> tuple[str, str | None]:
    """(data folder, glob pattern) for an input given as a file, a directory or a glob."""
    path = Path(spec)
    if any(c in spec for c in "*?["):
        parts = path.parts
        i = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
        return str(Path(*parts[:i])) if i else ".", str(Path(*parts[i:]))
    if path.is_file():
        return str(path.parent), path.name
    return spec, None


class CorpusReader(BaseDiskReader):
    name = "📖 Corpus reader"

    def __init__(self, spec: str, problems_dir: str, strict: bool = False, text_key: str = "text",
                 id_key: str = "id", default_metadata: dict | None = None, subset: str | None = None,
                 split: str = "train"):
        self.spec, self.subset, self.split = spec, subset, split
        self.hf = spec.startswith("hf://") or is_hf_dataset_dir(Path(spec))
        if not self.hf and not spec.startswith("hf://") and not any(c in spec for c in "*?[") \
                and not Path(spec).exists():
            raise InputError(f"{spec}: input not found")
        if not self.hf and Path(spec).is_file() and _suffixes(spec)[0] not in SUPPORTED:
            raise InputError(f"{spec}: unsupported format '{_suffixes(spec)[0] or 'no extension'}' "
                             f"(expected one of {', '.join(SUPPORTED)}, optionally .gz, or a saved HF dataset)")
        folder, pattern = split_spec(spec) if not self.hf else (spec, None)
        super().__init__(folder, glob_pattern=pattern, text_key=text_key, id_key=id_key,
                         default_metadata=default_metadata, recursive=True)
        self.problems_dir = Path(problems_dir)
        self.strict = strict
        self._problems = None

    # -- problems
    def problem(self, kind: str, where: str, detail: str) -> None:
        if self.strict:
            raise InputError(f"{where}: {detail}")
        self.stat_update(f"bad_{kind}")
        self._problems.write(json.dumps({"kind": kind, "where": where, "detail": detail}) + "\n")

    # -- records
    def _document(self, row: object, where: str, idx: int | str, source: str) -> Document | None:
        if not isinstance(row, dict):
            self.problem("not_an_object", where, f"expected a JSON object, got {type(row).__name__}")
            return None
        text = row.get(self.text_key)
        if not isinstance(text, str):
            kind = "missing_text" if text is None else "text_not_string"
            self.problem(kind, where, f"record has no string '{self.text_key}' field (keys: {sorted(row)[:10]})")
            return None
        doc_id = row.get(self.id_key)
        metadata = {k: v for k, v in row.items() if k not in (self.text_key, self.id_key)
                    and isinstance(v, (str, int, float, bool))}
        return Document(text=text, id=str(doc_id) if doc_id is not None else f"{source}/{idx}",
                        metadata={**(self.default_metadata or {}), **metadata})

    def _lines(self, raw: io.BufferedIOBase, where: str) -> Iterator[tuple[int, bytes]]:
        """Numbered lines of a possibly compressed stream; a truncated or corrupt stream ends with a problem."""
        lineno = 0
        try:
            for lineno, line in enumerate(raw, 1):
                yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            self.problem("truncated_or_corrupt", f"{where}:{lineno + 1}", f"compressed stream is truncated or "
                         f"corrupt after line {lineno} ({type(exc).__name__}: {exc}); the rest of the file is lost")

    def _open(self, filepath: str) -> io.BufferedIOBase:
        _, compression = _suffixes(filepath)
        f = self.data_folder.open(filepath, "rb")
        if compression == ".gz":
            return gzip.GzipFile(fileobj=f)
        if compression == ".zst":
            import zstandard

            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f))
        return f

    def read_file(self, filepath: str) -> DocumentsPipeline:
        where = self.data_folder.resolve_paths(filepath) if hasattr(self.data_folder, "resolve_paths") else filepath
        suffix, _ = _suffixes(filepath)
        if suffix not in SUPPORTED:
            self.problem("unsupported_file", str(where), f"unsupported format '{suffix or 'no extension'}' "
                         f"(expected one of {', '.join(SUPPORTED)}, optionally .gz)")
            return
        if self.data_folder.size(filepath) == 0:
            self.problem("empty_file", str(where), "file is empty")
            return
        if suffix == ".parquet":
            yield from self._read_parquet(filepath, where)
            return
        with self._open(filepath) as raw:
            if suffix in JSON_SUFFIXES:
                yield from self._read_json(raw, filepath, where)
            else:
                yield from self._read_text(raw, filepath, where, html=suffix in HTML_SUFFIXES)

    def _decode(self, line: bytes, where: str) -> str | None:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem("invalid_utf8", where, f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)")
            return None

    def _read_json(self, raw, filepath: str, where: str) -> DocumentsPipeline:
        head = raw.peek(64)[:64].lstrip() if hasattr(raw, "peek") else b""
        if head.startswith(b"["):  # a JSON array: small files only, read whole
            text = self._decode(b"".join(line for _, line in self._lines(raw, where)), where)
            if text is None:
                return
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                self.problem("invalid_json", f"{where}:{exc.lineno}", f"invalid JSON: {exc.msg}")
                return
            for i, row in enumerate(rows):
                doc = self._document(row, f"{where}: record {i}", i, filepath)
                if doc is not None:
                    yield doc
            return
        for lineno, line in self._lines(raw, where):
            if not line.strip():
                continue
            text = self._decode(line, f"{where}:{lineno}")
            if text is None:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                self.problem("invalid_json", f"{where}:{lineno}", f"not a JSON line: {exc.msg}")
                continue
            doc = self._document(row, f"{where}:{lineno}", lineno, filepath)
            if doc is not None:
                yield doc

    def _read_text(self, raw, filepath: str, where: str, html: bool) -> DocumentsPipeline:
        block, start, idx = [], 1, 0
        for lineno, line in self._lines(raw, where):
            text = self._decode(line, f"{where}:{lineno}")
            if text is None:
                text = line.decode("utf-8", errors="replace")
            if not html and not text.strip():
                if block:
                    yield Document(text="".join(block).strip(), id=f"{filepath}/{idx}",
                                   metadata={**(self.default_metadata or {}), "line": start})
                    idx += 1
                block, start = [], lineno + 1
                continue
            block.append(text)
        if "".join(block).strip():
            yield Document(text="".join(block).strip(), id=f"{filepath}/{idx}",
                           metadata={**(self.default_metadata or {}), "line": start})

    def _read_parquet(self, filepath: str, where: str) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        try:
            with self.data_folder.open(filepath, "rb") as f:
                pf = pq.ParquetFile(f)
                i = 0
                for batch in pf.iter_batches(batch_size=1024):
                    for row in batch.to_pylist():
                        doc = self._document(row, f"{where}: row {i}", i, filepath)
                        i += 1
                        if doc is not None:
                            yield doc
        except Exception as exc:  # pyarrow raises many types for a damaged file
            if isinstance(exc, InputError):
                raise
            self.problem("corrupt_parquet", str(where), f"unreadable parquet file: {exc}")

    def _read_hf(self, rank: int, world_size: int) -> DocumentsPipeline:
        from core.formats import load_hf_dataset

        ds = load_hf_dataset(self.spec, self.subset, self.split)
        for i in range(rank, len(ds), world_size):
            doc = self._document(ds[i], f"{self.spec}: row {i}", i, self.spec)
            if doc is not None:
                yield doc

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.problems_dir.mkdir(parents=True, exist_ok=True)
        with open(self.problems_dir / f"{rank:05d}.jsonl", "a", encoding="utf-8") as self._problems:
            if self.hf:
                docs = self._read_hf(rank, world_size)
            else:
                if not self.data_folder.list_files(glob_pattern=self.glob_pattern, recursive=True):
                    raise InputError(f"{self.spec}: no input files")
                docs = super().run(data, rank, world_size)
            for doc in docs:
                self.stat_update("documents_read")
                self.stat_update("bytes_read", value=len(doc.text.encode("utf-8")))
                yield doc


def read_problems(problems_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(problems_dir.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows
