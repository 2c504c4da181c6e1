"""Alignment trainers against their anchors, same model, data and config, one run each (fresh processes):

    python -m benchmarks.align [--steps 20] [--ppo-steps 8] [--repeats 5]

- sft, reward, dpo: the stage's trainer (built by the stage's own function, with its callbacks and arguments)
  against the same TRL trainer driven bare (TRL's config defaults plus the same hyper-parameters).
- ppo: the project's PPO (core.ppo) against TRL 1.12.0's `trl.experimental.ppo.PPOTrainer`, the last release
  that has it, installed on first use into benchmarks/work/trl112 (`pip install --no-deps --target`).

The figure is the median seconds per optimizer step (PPO: per rollout + update round) after the first two
steps, then the median over `repeats` fresh runs, alternating which side runs first; throughput ratio =
anchor step time / our step time (> 1: ours is faster), one per back-to-back pair, summarised as the median with
a bootstrap interval and any disturbed pair named (benchmarks/pairs.py). Results in
benchmarks/results/align.json. Models are the tiny profile, randomly initialised: speed, not quality.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.pairs import summarise

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "align"
TRL112 = ROOT / "benchmarks" / "work" / "trl112"
RESULTS = ROOT / "benchmarks" / "results" / "align.json"
BATCH, MAX_LENGTH, LR = 16, 256, 1e-4
PPO = dict(batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=12, temperature=1.0, kl_coef=0.05, lr=3e-5)


# --------------------------------------------------------------------------- shared setup (parent process)
def prepare() -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from core.formats import read_instructions, read_preferences
    from core.io import write_jsonl
    from pipelines import sample_data
    from stages import tokenizer as tokenizer_stage
    from stages.pretrain import PROFILES

    if (WORK / "ready").exists():
        return
    files = sample_data.generate(WORK / "sample", seed=0, scale=0.05)
    instructions = list(read_instructions(files["instructions"]))
    preferences = list(read_preferences(files["preferences"]))
    write_jsonl(WORK / "instructions.jsonl", instructions)
    write_jsonl(WORK / "preferences.jsonl", preferences)
    texts = [m["content"] for r in instructions for m in r["messages"]] + [r["chosen"] for r in preferences]
    tok = tokenizer_stage.build(texts * 3, tokenizer_stage.Config(vocab_size=2048))
    shape = PROFILES["tiny"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=shape["hidden_size"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=int(shape["hidden_size"] * 2.75 // 16 * 16),
        max_position_embeddings=shape["max_seq_len"], tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None))
    model.save_pretrained(WORK / "policy")
    tok.save_pretrained(WORK / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(WORK / "policy", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(WORK / "reward")
    tok.save_pretrained(WORK / "reward")
    (WORK / "ready").write_text("ok\n")


def ensure_trl112() -> None:
    if not (TRL112 / "trl" / "__init__.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TRL112),
                        "trl==1.12.0"], check=True)


# --------------------------------------------------------------------------- children
def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    return StepTimer()


def per_step(marks: list[float]) -> float:
    gaps = [b - a for a, b in zip(marks, marks[1:])][2:]  # the first steps warm caches
    return statistics.median(gaps)


def bare_args(kind: str, steps: int) -> dict:
    return dict(output_dir=str(WORK / f"out-{kind}"), max_steps=steps, per_device_train_batch_size=BATCH,
                learning_rate=LR, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                seed=0, max_length=MAX_LENGTH, dataloader_num_workers=0, disable_tqdm=True,
                gradient_checkpointing=False)  # as the stages (TRL defaults to True: a recompute that only saves memory)


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (WORK / f"{name}.jsonl").read_text().splitlines()]


def run_child(kind: str, steps: int) -> dict:
    import torch
    from datasets import Dataset

    from core import runtime
    from core.hf_trainers import StageLog, to_trl_pairs
    from core.lm import load_causal_lm, load_tokenizer

    runtime.setup(0)
    tok = load_tokenizer(WORK / "policy")
    timer = step_timer()
    task, who = kind.split("-")
    if task == "sft":
        from stages import sft

        model = load_causal_lm(WORK / "policy")
        cfg = sft.Config(steps=steps, batch_size=BATCH, lr=LR, max_length=MAX_LENGTH, log_every=1)
        if who == "ours":
            trainer = sft.build_trainer(cfg, model, tok, records("instructions"), WORK / "out-sft",
                                        [StageLog("sft"), timer])
        else:  # bare; bareckpt: with TRL's default gradient checkpointing
            from trl import SFTConfig, SFTTrainer

            tok.padding_side = "right"
            ds = Dataset.from_list(sft.to_prompt_completion(records("instructions")))
            bare = {**bare_args(kind, steps), "gradient_checkpointing": who == "bareckpt"}
            trainer = SFTTrainer(model=model, args=SFTConfig(**bare, completion_only_loss=True),
                                 train_dataset=ds, processing_class=tok,
                                 peft_config=cfg.lora.peft_config("CAUSAL_LM"), callbacks=[timer])
        trainer.train()
    elif task == "reward":
        from stages import reward

        cfg = reward.Config(steps=steps, batch_size=BATCH, lr=LR, max_length=MAX_LENGTH, log_every=1)
        if who == "ours":
            model, trainer = reward.build_trainer(cfg, WORK / "policy", tok, records("preferences"),
                                                  WORK / "out-reward", [StageLog("reward"), timer])
        else:
            from transformers import AutoModelForSequenceClassification
            from trl import RewardConfig, RewardTrainer

            tok.padding_side = "right"
            model = AutoModelForSequenceClassification.from_pretrained(WORK / "policy", num_labels=1)
            model.config.pad_token_id = tok.pad_token_id
            trainer = RewardTrainer(model=model, args=RewardConfig(**bare_args(kind, steps)),
                                    train_dataset=Dataset.from_list(to_trl_pairs(records("preferences"))),
                                    processing_class=tok, callbacks=[timer])
        trainer.train()
    elif task == "dpo":
        from stages import align

        d = align.DPOSettings(steps=steps, batch_size=BATCH, lr=LR, max_length=MAX_LENGTH, log_every=1)
        if who == "ours":
            trainer = align.build_dpo_trainer(d, 0, WORK / "policy", tok, records("preferences"), WORK / "out-dpo",
                                              [StageLog("align"), timer])
        else:
            from trl import DPOConfig, DPOTrainer

            tok.padding_side = "right"
            trainer = DPOTrainer(model=load_causal_lm(WORK / "policy"), ref_model=load_causal_lm(WORK / "policy"),
                                 args=DPOConfig(**bare_args(kind, steps)),
                                 train_dataset=Dataset.from_list(to_trl_pairs(records("preferences"))),
                                 processing_class=tok, callbacks=[timer])
        trainer.train()
    elif task == "ppo":
        prompts = [r["prompt"] for r in records("preferences")]
        if who == "ours":
            from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

            from core.lm import reward_scores
            from core.ppo import PPOTrainer
            from core.settings import PPOSettings

            tok.padding_side = "left"
            rm = AutoModelForSequenceClassification.from_pretrained(WORK / "reward").eval()
            value = AutoModelForTokenClassification.from_pretrained(WORK / "reward", num_labels=1)
            trainer = PPOTrainer(load_causal_lm(WORK / "policy"), load_causal_lm(WORK / "policy").eval(), value, tok,
                                 lambda p, a: reward_scores(rm, tok, p, a), PPOSettings(steps=steps, **PPO), 0,
                                 log_fn=lambda row, step: timer.marks.append(time.perf_counter()))
            trainer.train(prompts)
        else:
            sys.path.insert(0, str(TRL112))
            os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
            import trl
            from transformers import AutoModelForSequenceClassification
            from trl.experimental.ppo import PPOConfig, PPOTrainer

            assert trl.__version__ == "1.12.0", trl.__version__
            tok.padding_side = "left"
            from core.lm import prompt_text

            ds = Dataset.from_list([{"input_ids": tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"]}
                                    for p in prompts])
            args = PPOConfig(output_dir=str(WORK / "out-ppo"), per_device_train_batch_size=PPO["batch_size"],
                             num_mini_batches=PPO["batch_size"] // PPO["mini_batch_size"],
                             num_ppo_epochs=PPO["ppo_epochs"], response_length=PPO["max_new_tokens"],
                             temperature=PPO["temperature"], kl_coef=PPO["kl_coef"], learning_rate=PPO["lr"],
                             total_episodes=steps * PPO["batch_size"], stop_token="eos", report_to="none",
                             use_cpu=True, bf16=False, seed=0, save_strategy="no", logging_steps=1,
                             num_sample_generations=0, missing_eos_penalty=1.0, dataloader_num_workers=0,
                             gradient_checkpointing=False)  # ours does not recompute activations either
            trainer = PPOTrainer(args=args, processing_class=tok, model=load_causal_lm(WORK / "policy"),
                                 ref_model=load_causal_lm(WORK / "policy"),
                                 reward_model=AutoModelForSequenceClassification.from_pretrained(WORK / "reward"),
                                 value_model=AutoModelForSequenceClassification.from_pretrained(WORK / "reward"),
                                 train_dataset=ds, callbacks=[timer])
            trainer.train()
    return {"kind": kind, "steps": len(timer.marks), "s_per_step": per_step(timer.marks),
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- parent
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ppo-steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="alternating pairs (5 or more to read a few percent)")
    ap.add_argument("--only", nargs="*", default=["sft", "reward", "dpo", "ppo"])
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        steps = args.ppo_steps if args.child.startswith("ppo") else args.steps
        print("RESULT " + json.dumps(run_child(args.child, steps)))
        return
    prepare()
    ensure_trl112()
    results: dict = {}
    for task in args.only:
        anchor = "trl112" if task == "ppo" else "bare"
        kinds = ["ours", anchor] + (["bareckpt"] if task == "sft" else [])
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for repeat in range(args.repeats):
            for who in (kinds if repeat % 2 == 0 else kinds[::-1]):  # alternate who runs first
                env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
                proc = subprocess.run([sys.executable, "-m", "benchmarks.align", "--child", f"{task}-{who}",
                                       "--steps", str(args.steps), "--ppo-steps", str(args.ppo_steps)],
                                      cwd=ROOT, env=env, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{task}-{who} failed:\n{proc.stderr[-4000:]}")
                run = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
                times[who].append(run["s_per_step"])
                print(f"{task}-{who}: {run['s_per_step']:.3f} s/step", flush=True)
        median = {k: statistics.median(v) for k, v in times.items()}
        pairs = [a / o for a, o in zip(times[anchor], times["ours"])]  # each repeat's runs ran back to back
        results[task] = {
            "anchor": "trl==1.12.0 trl.experimental.ppo.PPOTrainer" if task == "ppo" else
            "the same TRL trainer, driven bare", "s_per_step_median": median, "s_per_step_runs": times,
            "throughput_ratio_ours_over_anchor": summarise(pairs)}
        if "bareckpt" in median:
            results[task]["gradient_checkpointing_slowdown"] = round(median["bareckpt"] / median["bare"], 4)
    import torch
    import transformers
    import trl

    out = {"command": "python -m benchmarks.align " + " ".join(sys.argv[1:]),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
           "setup": {"model": "tiny profile (2.2M), random init", "batch": BATCH, "max_length": MAX_LENGTH,
                     "steps": args.steps, "repeats": args.repeats, "ppo": {**PPO, "steps": args.ppo_steps}},
           "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
