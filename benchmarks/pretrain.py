"""The pretraining loop against a minimal raw PyTorch loop (nanoGPT-style), same model, batch and sequence length.

    python -m benchmarks.pretrain [--profile tiny] [--steps 80] [--repeats 7]
    python -m benchmarks.pretrain --profile gpt2-124m --batch 32 --seq-len 1024 --vocab 50304 --compile  # on a GPU

Each run is a fresh process (no warm caches carried over), alternating raw / ours; each back-to-back pair gives one
ratio, summarised as their median with a bootstrap interval and the pairs that sit far from the rest
(benchmarks/pairs.py). tokens/s is total tokens over the whole loop's wall time (ours includes its LR schedule, clipping, logging, the final validation and the
MFU bookkeeping). Results in benchmarks/results/pretrain.json (pretrain_<device>.json off the CPU).
On CUDA both loops run under bf16 autocast (our loop's `precision: auto`), and --compile compiles both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.pairs import summarise

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pretrain.json"


def build(profile: str, seq: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages.pretrain import PROFILES

    shape = PROFILES[profile]
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=shape["hidden_size"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=int(shape["hidden_size"] * 2.75 // 16 * 16),
        max_position_embeddings=max(seq, shape["max_seq_len"]), tie_word_embeddings=True, attn_implementation="sdpa"))


def child(kind: str, profile: str, steps: int, batch: int, seq: int, vocab: int, compile_model: bool) -> dict:
    import torch

    from core import runtime
    from core.settings import TrainSettings
    from core.train_loop import train  # imported before the clock starts, like torch for raw

    dev = runtime.setup(0)
    model = build(profile, seq, vocab).to(dev)
    data = torch.randint(vocab, (max(512, 4 * batch), seq), generator=torch.Generator().manual_seed(1))
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    start = time.perf_counter()
    if kind == "raw":
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                fused=dev.type == "cuda")
        gen = torch.Generator().manual_seed(0)
        step_model = torch.compile(model) if compile_model else model
        model.train()
        for _ in range(steps):
            x = data[torch.randint(len(data), (batch,), generator=gen)].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        final = loss.item()
        mfu = None
    else:
        settings = TrainSettings(steps=steps, batch_size=batch, lr=3e-3, warmup_steps=2, log_every=10,
                                 eval_every=10 ** 9, compile=compile_model)
        gen = torch.Generator().manual_seed(0)
        history = train(model, lambda step: data[torch.randint(len(data), (batch,), generator=gen)],
                        {"val": data[:1]}, settings, 0, desc="bench")
        final = [r["loss"] for r in history if "loss" in r][-1]
        rows = [r["mfu"] for r in history if "mfu" in r]
        mfu = statistics.mean(rows[1:] or rows)  # the first logged window holds compilation
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"kind": kind, "wall_s": wall, "tokens_per_s": steps * batch * seq / wall, "final_loss": final,
            "mfu": mfu, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": sum(p.numel() for p in model.parameters()), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "bf16": bf16,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=7, help="alternating pairs (5 or more to read a few percent)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    ap.add_argument("--child", choices=["raw", "ours"])
    a = ap.parse_args()
    shape = ["--profile", a.profile, "--steps", str(a.steps), "--batch", str(a.batch), "--seq-len", str(a.seq_len),
             "--vocab", str(a.vocab)] + (["--compile"] if a.compile else [])
    if a.child:
        print(json.dumps(child(a.child, a.profile, a.steps, a.batch, a.seq_len, a.vocab, a.compile)))
        return
    runs = []
    for i in range(a.repeats):
        for kind in (("raw", "ours") if i % 2 == 0 else ("ours", "raw")):
            out = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--child", kind, *shape], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{kind:>4}: {runs[-1]['tokens_per_s']:,.0f} tokens/s, peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB",
                  flush=True)
    med = {k: statistics.median(r["tokens_per_s"] for r in runs if r["kind"] == k) for k in ("raw", "ours")}
    ratios = [o["tokens_per_s"] / r["tokens_per_s"] for o, r in
              zip([r for r in runs if r["kind"] == "ours"], [r for r in runs if r["kind"] == "raw"])]
    ours = [r for r in runs if r["kind"] == "ours"]
    result = {
        "command": "python -m benchmarks.pretrain " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "device": runs[0]["device"], "threads": runs[0]["threads"]},
        "setup": {"profile": a.profile, "params": runs[0]["params"], "batch": a.batch, "seq_len": a.seq_len,
                  "vocab": a.vocab, "steps": a.steps, "repeats": a.repeats, "compile": a.compile,
                  "bf16": runs[0]["bf16"]},
        "tokens_per_s_median": med, "ratio_ours_over_raw": summarise(ratios),
        "ratio_per_pair": [round(r, 4) for r in ratios],
        "peak_rss_mib": {k: max(r["peak_rss_mib"] for r in runs if r["kind"] == k) for k in ("raw", "ours")},
        "mfu_ours_mean": statistics.mean(r["mfu"] for r in ours),
        "runs": runs,
    }
    path = RESULTS if runs[0]["device"] == "cpu" else RESULTS.with_name("pretrain_gpu.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps({k: result[k] for k in ("tokens_per_s_median", "ratio_ours_over_raw", "ratio_per_pair",
                                             "peak_rss_mib", "mfu_ours_mean")}, indent=1))


if __name__ == "__main__":
    main()
