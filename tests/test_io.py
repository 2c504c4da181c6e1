import os
import pytest

from core.io import atomic_dir, atomic_file, read_jsonl, write_jsonl


def test_atomic_dir_replaces_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # nothing visible until the end
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("killed mid-write")
    assert (out / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file_and_jsonl_roundtrip(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, [{"b": 1, "a": "é"}, {"c": None}]) == 2
    assert read_jsonl(path) == [{"a": "é", "b": 1}, {"c": None}]
    with pytest.raises(ValueError):
        with atomic_file(path) as fh:
            fh.write("partial")
            raise ValueError
    assert read_jsonl(path) == [{"a": "é", "b": 1}, {"c": None}]


def test_large_write_is_refused_before_it_starts_when_the_disk_is_short(tmp_path):
    from core.errors import LifecycleError
    from core.io import atomic_dir

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("earlier output")
    with pytest.raises(LifecycleError, match=r"out: not enough disk space to write it: needs about"):
        with atomic_dir(tmp_path / "out", need_bytes=2**62):
            raise AssertionError("never reached")
    assert (tmp_path / "out" / "keep").read_text() == "earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temporary_siblings_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from core.io import atomic_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".out.tmp-{dead}").mkdir()  # what a SIGKILLed stage leaves
    (tmp_path / f".out.tmp-{dead}" / "half.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / f".out.tmp-{os.getpid()}x").mkdir()  # not ours to judge: not a pid
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "model").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.tmp-{os.getpid()}x", "out"]
