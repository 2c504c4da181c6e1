"""Each broken input a user may bring stops `lifecycle run` in `clean`, with the file and the problem in the last
lines, and leaves every earlier output byte-identical (in a copy of the session's micro run)."""
from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

from tests import public_formats as pf
from tests.micro import copy_project, lifecycle


def truncated_gz() -> bytes:
    whole = gzip.compress("".join(json.dumps({"text": r["question"]}) + "\n" for r in pf.gsm8k_rows(300)).encode())
    return whole[: len(whole) // 3]


BROKEN = [  # (input, file, bytes, what the last lines must say)
    ("general", "bad/g.jsonl", b'{"text": "caf\xe9 au lait"}\n' * 20, r"bad/g\.jsonl.*no usable documents.*invalid_utf8"),
    ("domain", "bad/d.jsonl", b"", r"bad/d\.jsonl.*no usable documents.*empty_file"),
    ("general", "bad/g.jsonl", b"not json\n" * 20, r"bad/g\.jsonl.*no usable documents.*invalid_json"),
    ("instructions", "bad/i.jsonl", b'[{"question": "a", "answer": "#### 1"}]\n',
     r"bad/i\.jsonl:1: expected a JSON object, got list"),
    ("general", "bad/g.jsonl.gz", truncated_gz(), r"bad/g\.jsonl\.gz:\d+: compressed stream is truncated.*lost part of a file"),
    ("instructions", "bad/i.json", json.dumps([{"instruction": f"q{i}", "input": ""} for i in range(30)]).encode(),
     r"bad/i\.json: 0 usable instructions record\(s\) of 30.*missing_field 30.*bad/i\.json: record 0"),
    ("preferences", "bad/p.jsonl", b"".join(json.dumps({"prompt": f"q{i}", "chosen": "same", "rejected": "same"})
                                            .encode() + b"\n" for i in range(30)),
     r"bad/p\.jsonl: 0 usable preferences record\(s\) of 30.*identical_answers 30.*bad/p\.jsonl:1"),
    ("preferences", "bad/p.jsonl", b"".join(json.dumps({"prompt": f"q{i}", "chosen": "yes"}).encode() + b"\n"
                                            for i in range(30)),
     r"bad/p\.jsonl: 0 usable preferences record\(s\) of 30.*missing_field 30"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    keep = ("data", "artifacts", "metrics", "plots", "dvc.lock")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] in keep and "sample" not in p.parts}


def test_each_broken_input_stops_clean_and_leaves_every_output_as_it_was(micro_run, tmp_path):
    root = copy_project(micro_run.root, tmp_path / "project")
    before = snapshot(root)
    original = (root / "params.yaml").read_text()
    for name, rel, data, message in BROKEN:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        value = json.dumps({"path": rel, **({"fields": {"prompt": "question", "response": "answer"}}
                                            if name == "instructions" and "jsonl" in rel else {})})
        try:
            proc = lifecycle(root, "run", "--set", f"data.{name}={value}", check=False)
            assert proc.returncode == 2, (rel, proc.stderr[-3000:])
            assert "stage 'clean' failed" in proc.stderr and "error: [clean]" in proc.stderr, (rel, proc.stderr[-3000:])
            # the stage's own error line and what follows it (Prefect's server may log after it while stopping)
            error = "\n".join(("error: [clean]" + proc.stderr.rsplit("error: [clean]", 1)[1]).splitlines()[:6])
            assert re.search(message, error, re.DOTALL), (rel, error)
            assert snapshot(root) == before, rel  # DVC ran nothing past clean, and clean replaced nothing
        finally:  # the next case, and the next test, start from the project as it was
            (root / "params.yaml").write_text(original)
            shutil.rmtree(root / "bad", ignore_errors=True)
