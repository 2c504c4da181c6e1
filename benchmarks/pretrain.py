"""The pretraining loop against a minimal raw PyTorch loop (nanoGPT-style), same model, batch and sequence length.

    python -m benchmarks.pretrain [--profile tiny] [--steps 40] [--repeats 3]

Each run is a fresh process (no warm caches carried over), alternating raw / ours; tokens/s is total tokens over
the whole loop's wall time (ours includes its LR schedule, clipping, logging, the final validation and the
MFU bookkeeping). Results in benchmarks/results/pretrain.json.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pretrain.json"
BATCH, SEQ, VOCAB = 16, 128, 2048


def build(profile: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages.pretrain import PROFILES

    shape = PROFILES[profile]
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=shape["hidden_size"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=int(shape["hidden_size"] * 2.75 // 16 * 16),
        max_position_embeddings=shape["max_seq_len"], tie_word_embeddings=True, attn_implementation="sdpa"))


def child(kind: str, profile: str, steps: int) -> dict:
    import torch

    from core import runtime
    from core.train_loop import TrainSettings, train  # imported before the clock starts, like torch for raw

    dev = runtime.setup(0)
    model = build(profile).to(dev)
    data = torch.randint(VOCAB, (512, SEQ), generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    if kind == "raw":
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(steps):
            x = data[torch.randint(len(data), (BATCH,), generator=gen)].to(dev)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        final = loss.item()
        mfu = None
    else:
        settings = TrainSettings(steps=steps, batch_size=BATCH, lr=3e-3, warmup_steps=2, log_every=10,
                                 eval_every=10 ** 9)
        gen = torch.Generator().manual_seed(0)
        history = train(model, lambda step: data[torch.randint(len(data), (BATCH,), generator=gen)],
                        {"val": data[:1]}, settings, 0, desc="bench")
        final = [r["loss"] for r in history if "loss" in r][-1]
        mfu = statistics.mean(r["mfu"] for r in history if "mfu" in r)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"kind": kind, "wall_s": wall, "tokens_per_s": steps * BATCH * SEQ / wall, "final_loss": final,
            "mfu": mfu, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": sum(p.numel() for p in model.parameters()), "device": str(dev),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["raw", "ours"])
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.profile, a.steps)))
        return
    runs = []
    for i in range(a.repeats):
        for kind in (("raw", "ours") if i % 2 == 0 else ("ours", "raw")):
            out = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--child", kind, "--profile", a.profile,
                                  "--steps", str(a.steps)], cwd=ROOT, capture_output=True, text=True, check=True)
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
        "setup": {"profile": a.profile, "params": runs[0]["params"], "batch": BATCH, "seq_len": SEQ, "vocab": VOCAB,
                  "steps": a.steps, "repeats": a.repeats},
        "tokens_per_s_median": med, "ratio_ours_over_raw_median": round(med["ours"] / med["raw"], 4),
        "ratio_per_pair": [round(r, 4) for r in ratios],
        "peak_rss_mib": {k: max(r["peak_rss_mib"] for r in runs if r["kind"] == k) for k in ("raw", "ours")},
        "mfu_ours_mean": statistics.mean(r["mfu"] for r in ours),
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(json.dumps({k: result[k] for k in ("tokens_per_s_median", "ratio_ours_over_raw_median", "ratio_per_pair",
                                             "peak_rss_mib", "mfu_ours_mean")}, indent=1))


if __name__ == "__main__":
    main()
