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
