"""A stage given a missing or unreadable input exits non-zero with a message naming it, and keeps old outputs."""
import json

from tests.micro import ROOT, start_stage


def clean_stage(folder) -> tuple[int, str]:
    """`python -m stages.clean` in `folder` with this checkout's code: (exit code, stderr)."""
    proc = start_stage(folder, "clean", PYTHONPATH=str(ROOT))
    _, err = proc.communicate()
    return proc.returncode, err


def run_clean(tmp_path, data):
    (tmp_path / "params.yaml").write_text(
        "data: " + json.dumps(data) + "\nclean: {}\n", encoding="utf-8")
    return clean_stage(tmp_path)


def test_missing_input_file(tmp_path):
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "clean" / "keep.txt").write_text("earlier output")
    code, err = run_clean(tmp_path, {"general": "nope.jsonl", "domain": "d", "instructions": "i", "preferences": "p"})
    assert code == 2
    assert "error: [clean] nope.jsonl: input not found" in err
    assert "Traceback" not in err
    assert (tmp_path / "data" / "clean" / "keep.txt").read_text() == "earlier output"


def test_unreadable_format(tmp_path):
    (tmp_path / "g.xlsx").write_bytes(b"PK\x03\x04")
    code, err = run_clean(tmp_path, {"general": "g.xlsx", "domain": "d", "instructions": "i", "preferences": "p"})
    assert code == 2
    assert "g.xlsx: unsupported format '.xlsx'" in err


def test_unknown_param_key(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {general: g, domain: d, instructions: i, preferences: p}\n"
                                          "clean: {min_wrds: 3}\n")
    code, err = clean_stage(tmp_path)
    assert code == 2 and "clean.min_wrds: unknown key" in err
