"""Atomic writes: an output appears whole or not at all, and the previous one survives a failure."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator


def remove_abandoned(path: Path) -> None:
    """Delete the temporary siblings of `path` that a killed process left (its pid is in their name)."""
    for sibling in path.parent.glob(f".{path.name}.*-*"):
        pid = sibling.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and (sibling.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-")))):
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if sibling.is_dir():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def require_free_space(path: str | Path, need_bytes: int, what: str) -> None:
    """Fail before a large write rather than halfway through it (with 10% to spare)."""
    from core.errors import LifecycleError

    path = Path(path).resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need_bytes * 1.1 > free:
        raise LifecycleError(f"{path}: not enough disk space to write {what}: needs about "
                             f"{need_bytes / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB free on {existing}")


def weight_bytes(*models) -> int:
    """Bytes of the models' parameters as stored (what a save or a checkpoint of them writes, roughly)."""
    return sum(p.numel() * p.element_size() for m in models for p in m.parameters())


@contextlib.contextmanager
def atomic_dir(path: str | Path, need_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on failure it is removed.
    `need_bytes`: what will be written, checked against the free disk space first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path)
    if need_bytes:
        require_free_space(path, need_bytes, "it")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: object) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_json(path: str | Path) -> dict:
    """A JSON file written by an earlier stage; a missing or broken one is an InputError naming it."""
    from core.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found (run the stage that writes it first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_texts(folder: str | Path) -> list[str]:
    """The `text` column of a folder of parquet shards, in shard-name order (the clean stage's corpus output)."""
    import pyarrow.parquet as pq

    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        from core.errors import InputError

        raise InputError(f"{folder}: no parquet shards; run the clean stage first")
    return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
