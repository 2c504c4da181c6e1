"""Training stages in a micro project: resume after a kill on the same curve, and `init_from` a checkpoint."""
import json

import pytest

from core.config import apply_overrides
from tests.micro import MICRO, checkpoint_left, copy_project, kill_at_checkpoint, run_stage, start_stage

LONG = ["pretrain.train.steps=40", "pretrain.train.log_every=2", "pretrain.train.eval_every=20",
        "pretrain.train.checkpoint_every=5", "pretrain.train.warmup_steps=3",
        "domain.train.steps=30", "domain.train.log_every=2", "domain.train.eval_every=15",
        "domain.train.checkpoint_every=5"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, micro_run):
    """The session's micro run (clean data, tokenizer) with longer pretrain and domain runs."""
    root = copy_project(micro_run.root, tmp_path_factory.mktemp("resume") / "project")
    apply_overrides(root / "params.yaml", MICRO + LONG)
    return root


def curve(root, stage):
    rows = json.loads((root / "plots" / f"{stage}.json").read_text())
    metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
    timing = {"tokens_per_s", "mfu"}
    return [{k: v for k, v in r.items() if k not in timing} for r in rows], \
        {k: v for k, v in metrics.items() if k not in timing}


def kill_after_checkpoint(root, stage, min_step):
    """Start the stage, SIGKILL it as soon as it reports a checkpoint at or after `min_step`."""
    return kill_at_checkpoint(start_stage(root, stage), min_step)


@pytest.mark.parametrize("stage,seed", [("pretrain", 5), ("domain", 6)])
def test_killed_stage_resumes_on_the_uninterrupted_curve(project, stage, seed):
    import random

    min_step = random.Random(seed).randrange(5, 25, 5)  # a checkpoint drawn by the seed (every 5 steps)
    run_stage(project, stage)  # domain trains on the pretrained model in place (the copy's, or a test's)
    expected = curve(project, stage)
    assert not (project / "checkpoints" / stage).exists()  # a finished run leaves nothing to resume

    for name in ("plots", "metrics"):
        (project / name / f"{stage}.json").unlink()
    printed = kill_after_checkpoint(project, stage, min_step)
    killed_at = checkpoint_left(project, stage)  # the one on disk: a loaded machine may save another before the kill
    assert killed_at >= printed
    assert not (project / "metrics" / f"{stage}.json").exists()  # no output from the killed run
    out, _ = run_stage(project, stage)
    assert f"resumed from checkpoints/{stage}/last at step {killed_at}" in out
    assert curve(project, stage) == expected


def test_checkpoint_of_another_configuration_is_not_resumed(project):
    run_stage(project, "pretrain")
    kill_after_checkpoint(project, "pretrain", 5)
    apply_overrides(project / "params.yaml", ["pretrain.train.lr=0.002"])
    try:
        out, _ = run_stage(project, "pretrain")
    finally:
        apply_overrides(project / "params.yaml", ["pretrain.train.lr=0.003"])
    assert "different configuration" in out and "resumed" not in out


def test_init_from_a_local_checkpoint_skips_pretraining(project, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # a checkpoint with its own, smaller vocabulary and no chat tokens: they are added, embeddings resized
    ours = AutoTokenizer.from_pretrained(str(project / "artifacts" / "tokenizer"))
    torch.manual_seed(0)
    ckpt = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=96, max_position_embeddings=256, tie_word_embeddings=True))
    ckpt.save_pretrained(tmp_path / "ckpt")
    apply_overrides(project / "params.yaml", [f"pretrain.init_from={tmp_path / 'ckpt'}"])
    try:
        run_stage(project, "pretrain")
    finally:
        apply_overrides(project / "params.yaml", ["pretrain.init_from=null"])
    metrics = json.loads((project / "metrics" / "pretrain.json").read_text())
    assert metrics["init_from"] == str(tmp_path / "ckpt") and metrics["train_tokens"] == 0
    assert metrics["val_ppl"] > 1 and metrics["val_bpb"] > 0
    saved = load_file(project / "artifacts" / "pretrain" / "model.safetensors")
    emb = saved["model.embed_tokens.weight"]
    assert emb.shape == (len(ours), 48)  # resized to the project's tokenizer
    assert torch.equal(emb[:300], ckpt.model.embed_tokens.weight.detach())  # the checkpoint's own weights
    assert torch.equal(saved["model.layers.1.mlp.down_proj.weight"], ckpt.model.layers[1].mlp.down_proj.weight.detach())
    run_stage(project, "domain")  # the next stage trains on it
    assert json.loads((project / "metrics" / "domain.json").read_text())["ppl_domain_after"] > 0


def test_joint_mixture_runs_and_reports_its_share(project):
    apply_overrides(project / "params.yaml", ["domain.mode=joint", "domain.domain_ratio=0.75"])
    try:
        run_stage(project, "domain")
    finally:
        apply_overrides(project / "params.yaml", ["domain.mode=sequential", "domain.domain_ratio=0.5"])
    m = json.loads((project / "metrics" / "domain.json").read_text())
    assert m["mode"] == "joint" and m["general_share"] == 0.25
    assert m["ppl_domain_after"] < m["ppl_domain_before"]


def test_multitask_pretraining_mixes_instruction_conversations(project):
    apply_overrides(project / "params.yaml", ["pretrain.instruction_mix=0.5", "pretrain.train.steps=6",
                                              "pretrain.train.checkpoint_every=0"])
    try:
        run_stage(project, "pretrain")
    finally:
        apply_overrides(project / "params.yaml", ["pretrain.instruction_mix=0.0", "pretrain.train.steps=40",
                                                  "pretrain.train.checkpoint_every=5"])
    m = json.loads((project / "metrics" / "pretrain.json").read_text())
    assert m["instruction_share"] == 0.5 and m["val_ppl"] > 1
