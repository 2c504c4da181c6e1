"""Stage `evaluate`: scores the base, domain, sft and aligned models on held-out data.

Per model: perplexity and bits per byte (comparable across tokenizers) on held-out general and domain text,
task accuracy on held-out instructions
(greedy answers, checked with core.lm.answer_of), share of answers that are one full sentence (the form the
preference data asks for, GRPO's format reward), BLEU (sacrebleu) and ROUGE-L (rouge-score) against the
reference answers, distinct-1/2 diversity, the mean length-normalised log-probability of its own answers
(confidence), and the mean reward-model score of its answers. The aligned model also gets its KL to the SFT
model and its win rate over SFT under the reward model.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field

from core import metrics as m, runtime, tracking
from core.config import StageConfig
from core.io import atomic_dir, read_jsonl, read_texts, write_json, write_jsonl
from core.lm import (answer_kl, answer_logprob, answer_of, bytes_per_token, generate, is_sentence_answer,
                     load_causal_lm, load_pretrained, load_tokenizer, mean_nll, pack,
                     require_same_tokenizer, reward_scores)

CLEAN = Path("data/clean")
MODELS = {"base": Path("artifacts/pretrain"), "domain": Path("artifacts/domain"), "sft": Path("artifacts/sft"),
          "aligned": Path("artifacts/align")}
REWARD = Path("artifacts/reward")
OUT_DIR = Path("artifacts/evaluate")
METRICS = Path("metrics/evaluate.json")


class Config(StageConfig):
    seed: int = 0
    seq_len: int = Field(128, gt=1)
    max_examples: int = Field(1000, gt=0, description="cap on held-out prompts scored per model")
    max_new_tokens: int = Field(16, gt=0)
    batch_size: int = Field(32, gt=0)


def task_accuracy(answers: list[str], references: list[str]) -> float:
    return sum(answer_of(a) == answer_of(r) for a, r in zip(answers, references)) / max(len(references), 1)


def run(cfg: Config) -> dict:
    from transformers import AutoModelForSequenceClassification

    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(MODELS["sft"])
    texts = {name: read_texts(CLEAN / name / "heldout") for name in ("general", "domain")}
    held = {name: pack(tokenizer, t, cfg.seq_len) for name, t in texts.items()}
    byte_rate = {name: bytes_per_token(tokenizer, t) for name, t in texts.items()}
    tasks = read_jsonl(CLEAN / "instructions.heldout.jsonl")[: cfg.max_examples]
    prompts = [r["messages"][:-1] for r in tasks]
    references = [r["messages"][-1]["content"] for r in tasks]
    require_same_tokenizer(tokenizer, REWARD, "reward model")
    reward_model = load_pretrained(AutoModelForSequenceClassification, REWARD, "reward model").to(dev).eval()

    metrics: dict[str, dict] = {}
    answers: dict[str, list[str]] = {}
    scores: dict[str, torch.Tensor] = {}
    for name, path in MODELS.items():
        model = load_causal_lm(path).to(dev).eval()
        answers[name] = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
        scores[name] = torch.tensor(reward_scores(reward_model, tokenizer, prompts, answers[name], cfg.batch_size))
        nll = {corpus: mean_nll(model, blocks, cfg.batch_size) for corpus, blocks in held.items()}
        metrics[name] = {
            **{f"ppl_{c}": math.exp(v) for c, v in nll.items()},
            **{f"bpb_{c}": m.bits_per_byte(v, byte_rate[c]) for c, v in nll.items()},
            "task_accuracy": task_accuracy(answers[name], references),
            "bleu": m.bleu(answers[name], references),
            "rouge_l": m.rouge_l(answers[name], references),
            "distinct_1": m.distinct_n(answers[name], 1),
            "distinct_2": m.distinct_n(answers[name], 2),
            "sentence_share": sum(map(is_sentence_answer, answers[name])) / max(len(answers[name]), 1),
            "reward_score": scores[name].mean().item(),
            "answer_logprob": sum(answer_logprob(model, tokenizer, prompts, answers[name], cfg.batch_size))
            / len(prompts),
        }
        if name == "aligned":
            sft = load_causal_lm(MODELS["sft"]).to(dev).eval()
            kls = answer_kl(model, sft, tokenizer, prompts, answers[name], cfg.batch_size)
            metrics[name]["kl_to_sft"] = sum(kls) / len(kls)
            metrics[name]["win_rate_vs_sft"] = m.win_rate(scores["aligned"].tolist(), scores["sft"].tolist())
        tracking.log_metrics({f"{name}.{k}": v for k, v in metrics[name].items()})
    with atomic_dir(OUT_DIR) as tmp:
        write_jsonl(tmp / "samples.jsonl", [
            {"prompt": p[-1]["content"], "reference": ref, **{n: answers[n][i] for n in MODELS}}
            for i, (p, ref) in enumerate(zip(prompts, references))])
    write_json(METRICS, metrics)
    tracking.log_artifact(OUT_DIR / "samples.jsonl", "samples")
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("evaluate", Config, run)


if __name__ == "__main__":
    main()
