"""Stage `evaluate`: scores the base, domain, sft and aligned models on held-out data.

Per model: perplexity and bits per byte (comparable across tokenizers) on held-out general and domain text;
on held-out instructions, greedy answers scored as the task (params `task`, tasks/) says: a checkable task
(sentiment, numeric, choice, regex) gives `task_accuracy` and `answer_rate` (answers it could read at all), a
free-form one chrF, ROUGE-L, BLEU and exact match against the references; distinct-1/2 diversity.
Judged two ways: `gold_score`, the task's gold rule (tasks/: the demo's sentiment rule, else the task's verifiable
reward), which no stage optimises, with a bootstrap 95 % interval `gold_score_ci`; and `reward_score`, the reward
model's mean score, the proxy that alignment optimised. `reference_logprob` is the mean length-normalised
log-probability of the reference answers (a model's own greedy answers would sit near their maximum whatever their
quality). The aligned model also gets `kl_to_sft`, estimated on `kl_samples` answers per prompt sampled at
temperature 1 for `kl_prompts` prompts, with its standard error `kl_to_sft_se` (over prompts), and its win rate over
SFT under the reward model. The task's name, kind and primary metric go into metrics/evaluate.json for the report
card and promotion.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from core import metrics as measures, tracking
from core.config import StageConfig
from core.io import atomic_dir, read_jsonl, read_texts, write_json, write_jsonl
from tasks import TaskConfig, check_fit, load_task

# torch and transformers (and core.lm) are imported in run(): `lifecycle run` imports every stage's Config to
# check params.yaml, and that check must not wait for them

CLEAN = Path("data/clean")
MODELS = {"base": Path("artifacts/pretrain"), "domain": Path("artifacts/domain"), "sft": Path("artifacts/sft"),
          "aligned": Path("artifacts/align")}
REWARD = Path("artifacts/reward")
OUT_DIR = Path("artifacts/evaluate")
METRICS = Path("metrics/evaluate.json")


class Config(StageConfig):
    INCLUDE: ClassVar[tuple[str, ...]] = ("task",)
    task: TaskConfig = TaskConfig()
    seed: int = 0
    seq_len: int = Field(128, gt=1)
    max_examples: int = Field(1000, gt=0, description="cap on held-out prompts scored per model")
    max_new_tokens: int = Field(16, gt=0)
    batch_size: int = Field(32, gt=0)
    kl_prompts: int = Field(64, gt=1, description="held-out prompts the aligned model's KL to SFT is estimated on")
    kl_samples: int = Field(4, gt=0, description="answers sampled (temperature 1) per prompt for that KL")
    bootstrap_resamples: int = Field(2000, gt=99, description="resamples for gold_score_ci")


def run(cfg: Config) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    from core import runtime
    from core.lm import (answer_logprob, bytes_per_token, generate, load_causal_lm, load_pretrained, load_tokenizer,
                         mean_nll, pack, require_same_tokenizer, reward_scores, sampled_kl)

    dev = runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(MODELS["sft"])
    texts = {name: read_texts(CLEAN / name / "heldout") for name in ("general", "domain")}
    held = {name: pack(tokenizer, t, cfg.seq_len) for name, t in texts.items()}
    byte_rate = {name: bytes_per_token(tokenizer, t) for name, t in texts.items()}
    task = load_task(cfg.task)
    records = read_jsonl(CLEAN / "instructions.heldout.jsonl")[: cfg.max_examples]
    check_fit(task, records, str(CLEAN / "instructions.heldout.jsonl"))
    prompts = [task.prompt(r) for r in records]
    references = [task.reference(r) for r in records]
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
        gold = [task.gold(a, ref, p) for a, ref, p in zip(answers[name], references, prompts)]
        low, high = measures.bootstrap_ci(gold, resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        metrics[name] = {
            **{f"ppl_{c}": math.exp(v) for c, v in nll.items()},
            **{f"bpb_{c}": measures.bits_per_byte(v, byte_rate[c]) for c, v in nll.items()},
            **task.metrics(answers[name], references, prompts),
            "distinct_1": measures.distinct_n(answers[name], 1),
            "distinct_2": measures.distinct_n(answers[name], 2),
            "gold_score": sum(gold) / len(gold), "gold_score_ci": [low, high],
            "reward_score": scores[name].mean().item(),
            "reference_logprob": sum(answer_logprob(model, tokenizer, prompts, references, cfg.batch_size))
            / len(prompts),
        }
        if name == "aligned":
            sft = load_causal_lm(MODELS["sft"]).to(dev).eval()
            kls = sampled_kl(model, sft, tokenizer, prompts[: cfg.kl_prompts], cfg.kl_samples, cfg.max_new_tokens,
                             cfg.batch_size, cfg.seed)
            metrics[name]["kl_to_sft"], metrics[name]["kl_to_sft_se"] = measures.mean_and_se(kls)
            metrics[name]["win_rate_vs_sft"] = measures.win_rate(scores["aligned"].tolist(), scores["sft"].tolist())
        tracking.log_metrics({f"{name}.{k}": v for k, v in metrics[name].items()})
    with atomic_dir(OUT_DIR) as tmp:
        write_jsonl(tmp / "samples.jsonl", [
            {"prompt": p[-1]["content"], "reference": ref, **{n: answers[n][i] for n in MODELS}}
            for i, (p, ref) in enumerate(zip(prompts, references))])
    metrics["task"] = {"name": task.name, "checkable": task.checkable, "primary_metric": task.primary_metric,
                       "examples": len(records)}
    write_json(METRICS, metrics)
    tracking.log_artifact(OUT_DIR / "samples.jsonl", "samples")
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("evaluate", Config, run)


if __name__ == "__main__":
    main()
