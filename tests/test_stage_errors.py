"""A stage given a missing or unreadable input exits non-zero with a message naming it, and keeps old outputs."""
import json
import os
import subprocess
import sys

from tests.micro import ROOT


def run_clean(tmp_path, data):
    (tmp_path / "params.yaml").write_text(
        "data: " + json.dumps(data) + "\nclean: {}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    return subprocess.run([sys.executable, "-m", "stages.clean"], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_missing_input_file(tmp_path):
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "clean" / "keep.txt").write_text("earlier output")
    proc = run_clean(tmp_path, {"general": "nope.jsonl", "domain": "d", "instructions": "i", "preferences": "p"})
    assert proc.returncode == 2
    assert "error: [clean] nope.jsonl: input not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "data" / "clean" / "keep.txt").read_text() == "earlier output"


def test_unreadable_format(tmp_path):
    (tmp_path / "g.xlsx").write_bytes(b"PK\x03\x04")
    proc = run_clean(tmp_path, {"general": "g.xlsx", "domain": "d", "instructions": "i", "preferences": "p"})
    assert proc.returncode == 2
    assert "g.xlsx: unsupported format '.xlsx'" in proc.stderr


def test_unknown_param_key(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {general: g, domain: d, instructions: i, preferences: p}\n"
                                          "clean: {min_wrds: 3}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.clean"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "clean.min_wrds: unknown key" in proc.stderr
