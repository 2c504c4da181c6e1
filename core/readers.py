"""A datatrove reader for corpora as users bring them, that never dies mid-corpus on a bad record.

Each file is read by `core.formats.file_rows`, the one reader of the input formats (text blocks, JSON lines and
arrays, HTML, parquet; .gz/.zst by extension), plus saved Hugging Face datasets and `hf://name` datasets. Each
problem (invalid UTF-8, a truncated or corrupt .gz, an empty file, a line that is not JSON or not an object, a
missing or non-string `text`) is counted under its kind and recorded with file and line in
`<problems_dir>/<rank>.jsonl`; with `strict` the first one stops the run with an InputError naming file and line.
"""
from __future__ import annotations

import json
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader

from core.errors import InputError
from core.formats import (HTML_SUFFIXES, TEXT_SUFFIXES, file_rows, input_files, is_hf_dataset_dir, load_hf_dataset,
                          split_spec, suffixes, unsupported)


def n_input_files(path: str) -> int:
    """Input files of a corpus at `path` (a saved or hub HF dataset counts as one)."""
    if path.startswith("hf://") or is_hf_dataset_dir(Path(path)):
        return 1
    return len(input_files(path))


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
        if not self.hf and Path(spec).is_file() and unsupported(spec):
            raise InputError(f"{spec}: {unsupported(spec)}")
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
    def _document(self, row: object, where: str, idx: int | str, source: str, text_key: str) -> Document | None:
        if not isinstance(row, dict):
            self.problem("not_an_object", where, f"expected a JSON object, got {type(row).__name__}")
            return None
        text = row.get(text_key)
        if not isinstance(text, str):
            kind = "missing_text" if text is None else "text_not_string"
            self.problem(kind, where, f"record has no string '{text_key}' field (keys: {sorted(row)[:10]})")
            return None
        doc_id = row.get(self.id_key)
        metadata = {k: v for k, v in row.items() if k not in (text_key, self.id_key)
                    and isinstance(v, (str, int, float, bool))}
        return Document(text=text, id=str(doc_id) if doc_id is not None else f"{source}/{idx}",
                        metadata={**(self.default_metadata or {}), **metadata})

    def read_file(self, filepath: str) -> DocumentsPipeline:
        if self.glob_pattern is None and any(part.startswith(".") for part in Path(filepath).parts):
            return  # a directory's hidden files are not inputs (core.formats.input_files leaves them out too)
        where = self.data_folder.resolve_paths(filepath) if hasattr(self.data_folder, "resolve_paths") else filepath
        # text and HTML files hold their documents under "text"; JSON and parquet records under the mapped field
        text_key = "text" if suffixes(filepath)[0] in TEXT_SUFFIXES + HTML_SUFFIXES else self.text_key
        with self.data_folder.open(filepath, "rb") as f:
            for at, index, row in file_rows(f, filepath, str(where), self.problem):
                doc = self._document(row, at, index, filepath, text_key)
                if doc is not None:
                    yield doc

    def _read_hf(self, rank: int, world_size: int) -> DocumentsPipeline:
        ds = load_hf_dataset(self.spec, self.subset, self.split)
        for i in range(rank, len(ds), world_size):
            doc = self._document(ds[i], f"{self.spec}: row {i}", i, self.spec, self.text_key)
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
