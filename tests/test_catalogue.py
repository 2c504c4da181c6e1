"""The bad-input catalogue: each case gives a clear error naming the file, line or key, a non-zero exit, no
traceback, and no damage (every file in the project is byte-for-byte what it was)."""
from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.micro import ROOT, start_stage

@pytest.fixture(scope="module")
def base(micro_run, tmp_path_factory):
    """The session's micro run as the stages see it: its params, sample and cleaned data, tokenizer and trained
    models (a real reward model where one is read). Its history (git, the DVC cache, the MLflow store) stays
    behind; each case works on a copy."""
    root = tmp_path_factory.mktemp("catalogue")
    for name in ("data", "artifacts"):
        shutil.copytree(micro_run.root / name, root / name)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(micro_run.root / name, root / name)
    return root


def set_param(root: Path, dotted: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


DELETE = object()


def write(rel: str, data: bytes | str):
    def mutate(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return mutate


def data_file(corpus: str, rel: str, data: bytes | str, strict: bool = True):
    """Point data.<corpus> at a new file holding `data` (strict: the first bad record stops the stage)."""
    def mutate(root: Path) -> None:
        write(rel, data)(root)
        set_param(root, f"data.{corpus}", rel)
        set_param(root, "clean.strict", strict)
    return mutate


def params(**values):
    def mutate(root: Path) -> None:
        for key, value in values.items():
            set_param(root, key.replace("__", "."), value)
    return mutate


def both(*mutations):
    def mutate(root: Path) -> None:
        for m in mutations:
            m(root)
    return mutate


def truncated_gz() -> bytes:
    whole = gzip.compress(b"".join(json.dumps({"text": f"Document {i} is long enough to matter here."}).encode()
                                   + b"\n" for i in range(200)))
    return whole[: len(whole) // 2]


def other_tokenizer(root: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(root / "artifacts" / "reward"))
    tok.add_tokens(["zzzextra"])
    tok.save_pretrained(str(root / "artifacts" / "reward"))
    set_param(root, "align.method", "ppo")


PAIR = '{"prompt": "Is it good?", "chosen": "%s", "rejected": "%s"}\n'
CASES = [
    # --- input files (clean)
    ("invalid-utf8", "clean", data_file("general", "in/g.jsonl", b'{"text": "caf\xe9 au lait"}\n'),
     r"in/g\.jsonl:1: .*UTF-8"),
    ("truncated-gz", "clean", data_file("general", "in/g.jsonl.gz", truncated_gz()), r"in/g\.jsonl\.gz.*(gzip|truncat|end)"),
    ("empty-file", "clean", data_file("domain", "in/d.jsonl", b""), r"in/d\.jsonl: file is empty"),
    ("directory-instead-of-file", "clean", both(lambda root: (root / "in" / "folder").mkdir(parents=True),
                                                params(data__instructions="in/folder")),
     r"in/folder: directory holds no input files"),
    ("json-array-in-jsonl", "clean",
     data_file("instructions", "in/i.jsonl", '[{"instruction": "a", "output": "b"}]\n'),
     r"in/i\.jsonl:1: expected a JSON object, got list"),
    ("invalid-json-line", "clean", data_file("domain", "in/d.jsonl", '{"text": "fine"}\n{"text": \n'),
     r"in/d\.jsonl:2: invalid JSON line"),
    ("missing-text", "clean", data_file("general", "in/g.jsonl", '{"body": "no text field"}\n'),
     r"in/g\.jsonl:1: .*'text'"),
    ("text-not-a-string", "clean", data_file("domain", "in/d.jsonl", '{"text": 7}\n'), r"in/d\.jsonl:1: .*'text'"),
    ("missing-chosen", "clean", data_file("preferences", "in/p.jsonl", '{"prompt": "q", "rejected": "no"}\n'),
     r"in/p\.jsonl:1: .*chosen"),
    ("chosen-equals-rejected", "clean", data_file("preferences", "in/p.jsonl", PAIR % ("same", "same")),
     r"in/p\.jsonl:1: chosen and rejected answers are identical"),
    ("empty-response", "clean", data_file("instructions", "in/i.jsonl", '{"instruction": "q", "output": "  "}\n'),
     r"in/i\.jsonl:1: .*empty"),
    ("missing-prompt", "clean", data_file("preferences", "in/p.jsonl", '{"chosen": "a", "rejected": "b"}\n'),
     r"in/p\.jsonl:1: not a .*Human.*conversation"),
    # one record spread over lines: neither an array of records, nor an object holding one, nor JSON lines
    ("json-object-not-array", "clean", data_file("instructions", "in/i.json", '{\n "instruction": "q",\n "output": "a"\n}'),
     r"in/i\.json: expected a JSON array of records"),
    ("corrupt-parquet", "clean", data_file("domain", "in/d.parquet", b"PAR1 not really parquet"),
     r"in/d\.parquet: unreadable parquet file"),
    ("input-not-found", "clean", params(data__general="in/nope.jsonl"), r"in/nope\.jsonl: input not found"),
    ("unsupported-format", "clean", data_file("general", "in/g.xlsx", b"PK\x03\x04"),
     r"in/g\.xlsx: unsupported format '\.xlsx'"),
    # --- params
    ("unknown-key", "clean", params(clean__min_wrds=3), r"clean\.min_wrds: unknown key"),
    ("wrong-type", "sft", params(sft__steps="many"), r"sft\.steps"),
    ("negative-lr", "sft", params(sft__lr=-0.001), r"sft\.lr"),
    ("vocab-below-special-tokens", "tokenizer", params(tokenizer__vocab_size=100),
     r"tokenizer\.vocab_size.*100 is smaller than the 256 byte symbols"),
    ("sequence-length-0", "pretrain", params(pretrain__seq_len=0), r"pretrain\.seq_len"),
    ("missing-section", "reward", params(reward=DELETE), r"missing section 'reward'"),
    ("unknown-method", "align", params(align__method="ppo2"), r"align\.method"),
    ("lora-rank-0", "sft", params(sft__lora__r=0), r"sft\.lora\.r"),
    ("negative-max-examples", "evaluate", params(evaluate__max_examples=-1), r"evaluate\.max_examples"),
    ("grpo-batch-not-multiple", "align", params(align__method="grpo", align__grpo__batch_size=5),
     r"align\.grpo\.batch_size \(5\) must be a multiple of num_generations"),
    ("qlora-without-gpu", "sft", params(sft__quantization="4bit"), r"sft\.quantization: 4bit .*CUDA"),
    ("missing-data-key", "clean", params(data__general=DELETE), r"data\.general"),
    ("params-not-yaml", "clean", write("params.yaml", "clean: [unclosed\n"), r"params\.yaml: not valid YAML"),
    ("dpo-loss-type-string", "align", params(align__dpo__loss_type="sigmoid"), r"align\.dpo\.loss_type"),
    # --- models and checkpoints
    ("lora-target-absent", "sft", params(sft__lora__target_modules=["nope_proj"]),
     r"sft\.lora\.target_modules: \['nope_proj'\] not found in the model"),
    ("corrupt-safetensors", "sft", write("artifacts/domain/model.safetensors", b"\x00garbage" * 8),
     r"artifacts/domain: cannot load the model"),
    ("missing-input-model", "reward", lambda root: shutil.rmtree(root / "artifacts" / "sft"),
     r"artifacts/sft: no tokenizer here|artifacts/sft: no SFT model here"),
    ("reward-tokenizer-mismatch", "align", other_tokenizer,
     r"artifacts/reward: the reward model's tokenizer \(\d+ tokens\) differs"),
    ("missing-checkpoint-for-init", "pretrain", params(pretrain__init_from="checkpoints/none"),
     r"pretrain\.init_from: checkpoints/none is not a Hugging Face checkpoint directory"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    skip = ("m.db", "mlflow", "checkpoints")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


@pytest.mark.parametrize("case, stage, mutate, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_damages_nothing(base, tmp_path, case, stage, mutate, message):
    root = tmp_path / "project"
    shutil.copytree(base, root)
    mutate(root)
    before = snapshot(root)
    # `python -m stages.<stage>` in the project, as DVC runs it (forked from the tests' stage host: the imports
    # are most of a case's time); the code is this checkout's, the MLflow store the catalogue's own
    proc = start_stage(root, stage, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=f"sqlite:///{base / 'm.db'}")
    _, err = proc.communicate()
    code = proc.returncode
    assert code == 2, err[-3000:]
    assert f"error: [{stage}]" in err and "Traceback" not in err, err[-3000:]
    assert re.search(message, err), err[-3000:]
    assert snapshot(root) == before  # nothing written, nothing half-written, nothing removed


def test_the_catalogue_is_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
