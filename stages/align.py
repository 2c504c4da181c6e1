"""Stage `align`: RLHF from the SFT model, `method: dpo | ppo | grpo`.

dpo:  TRL's DPOTrainer on the preference pairs, reference = the SFT model.
ppo:  the project's PPO trainer (core.ppo): policy and reference from SFT, value model initialised from
      the reward model, rewards from the `reward` stage's model with a per-token KL penalty. Its prompts are the
      instructions' training prompts: none is a prompt the reward model trained on or evaluate scores. Each
      update logs the proxy (reward model) and the task's gold score of its answers; plots/align_overopt/ holds
      both against the KL (the over-optimisation curve of Gao et al. 2022).
grpo: TRL's GRPOTrainer on the instruction prompts with verifiable rewards from the task (params `task`,
      tasks/), as nanochat does RL on GSM8K and DeepSeek-R1 with accuracy + format rewards: `correct` (the
      task's reward: 1 when the sampled answer is the reference's; a free-form task's chrF in [0, 1]) plus,
      for a task with a format rule, `format_weight` x `format` (the demo's: one short sentence giving a
      reason); KL to the SFT model. The task's gold score is logged per step as a reward of weight 0.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from core import tracking
from core.config import StageConfig
from core.errors import ConfigError
from core.io import read_jsonl, weight_bytes, write_json
from core.settings import PPOSettings, TrainerSettings
from tasks import Task, TaskConfig, check_fit, load_task

# torch, transformers and TRL (and core.lm, core.hf_trainers, core.ppo) are imported where they are used:
# `lifecycle run` imports every stage's Config to check params.yaml, and that check must not wait for them
if TYPE_CHECKING:
    import torch

CLEAN = Path("data/clean")
SFT = Path("artifacts/sft")
REWARD = Path("artifacts/reward")
OUT_DIR = Path("artifacts/align")
WORK = Path("checkpoints/align")
METRICS = Path("metrics/align.json")
PLOT_DATA = Path("plots/align.json")
PLOT_PNG = Path("plots/align_curves.png")
# a DVC out of its own, empty after dpo: a run restored from DVC's run cache never shows another method's curve
OVEROPT_DIR = Path("plots/align_overopt")
OVEROPT_PNG = OVEROPT_DIR / "proxy_gold_vs_kl.png"


class DPOSettings(TrainerSettings):
    lr: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    loss_type: list[str] = ["sigmoid"]
    max_length: int = Field(256, gt=8)


class GRPOSettings(TrainerSettings):
    batch_size: int = Field(16, gt=0, description="completions per step (prompts x num_generations)")
    num_generations: int = Field(4, ge=2, description="samples per prompt: the group a reward is ranked in")
    lr: float = Field(1e-5, gt=0)
    beta: float = Field(0.04, ge=0, description="KL coefficient to the SFT model")
    temperature: float = Field(1.0, gt=0)
    max_completion_length: int = Field(16, gt=0)
    loss_type: str = "dapo"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    format_weight: float = Field(0.5, ge=0, description=(
        "weight of the task's format reward, for a task that has a format rule (0: correctness only)"))
    reward_model_weight: float = Field(0.0, ge=0, description=(
        "weight of the reward stage's model as a further reward (the learned proxy beside the verifiable ones)"))


class Config(StageConfig):
    INCLUDE: ClassVar[tuple[str, ...]] = ("task",)
    task: TaskConfig = TaskConfig()
    seed: int = 0
    method: Literal["dpo", "ppo", "grpo"] = "dpo"
    dpo: DPOSettings
    ppo: PPOSettings
    grpo: GRPOSettings


def build_dpo_trainer(d: DPOSettings, seed: int, sft: Path, tokenizer, records: list[dict], work_dir: Path,
                      callbacks=()):
    """TRL's DPOTrainer: policy and reference both from the SFT model."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from core.hf_trainers import to_trl_pairs
    from core.lm import load_causal_lm, right_padded

    args = DPOConfig(**d.trl_args(work_dir, seed), beta=d.beta, loss_type=d.loss_type, max_length=d.max_length)
    return DPOTrainer(model=load_causal_lm(sft), ref_model=load_causal_lm(sft), args=args,
                      train_dataset=Dataset.from_list(to_trl_pairs(records)), processing_class=right_padded(tokenizer),
                      callbacks=list(callbacks))


def run_dpo(cfg: Config, tokenizer) -> tuple[torch.nn.Module, list[dict]]:
    from core import hf_trainers
    from core.hf_trainers import StageLog

    trainer = build_dpo_trainer(cfg.dpo, cfg.seed, SFT, tokenizer, read_jsonl(CLEAN / "preferences.train.jsonl"),
                                WORK, [StageLog("align")])
    hf_trainers.train(trainer, "align", WORK, hf_trainers.fingerprint(cfg, SFT, CLEAN / "preferences.train.jsonl"))
    return trainer.model, hf_trainers.logged_rows(trainer, "loss")


def run_ppo(cfg: Config, tokenizer, dev) -> tuple[torch.nn.Module, list[dict]]:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from core import hf_trainers
    from core.lm import disable_dropout, load_causal_lm, load_pretrained, require_same_tokenizer, reward_scores
    from core.ppo import PPOTrainer, ValueHead

    policy = load_causal_lm(SFT).to(dev)
    if cfg.ppo.lora:
        from peft import get_peft_model

        cfg.ppo.lora.check(policy, "align.ppo.lora")
        policy = get_peft_model(policy, cfg.ppo.lora.peft_config("CAUSAL_LM"))
    reference = load_causal_lm(SFT).to(dev).eval()
    require_same_tokenizer(tokenizer, REWARD, "reward model")
    reward_model = load_pretrained(AutoModelForSequenceClassification, REWARD, "reward model").to(dev).eval()
    reward_model.requires_grad_(False)
    disable_dropout(reward_model)
    if cfg.ppo.value == "head":
        value_model = ValueHead(policy)
    else:
        value_model = load_pretrained(AutoModelForTokenClassification, REWARD, "reward model",
                                      num_labels=1).to(dev)
    task = load_task(cfg.task)
    records = read_jsonl(CLEAN / "instructions.train.jsonl")
    check_fit(task, records, str(CLEAN / "instructions.train.jsonl"))
    prompts, references = [task.prompt(r) for r in records], [task.reference(r) for r in records]

    def score(batch_prompts, answers):
        return reward_scores(reward_model, tokenizer, batch_prompts, answers)

    def gold(batch_prompts, answers, refs):
        return [task.gold(a, ref, p) for p, a, ref in zip(batch_prompts, answers, refs)]

    trainer = PPOTrainer(policy, reference, value_model, tokenizer, score, cfg.ppo, cfg.seed,
                         log_fn=lambda row, step: tracking.log_metrics(
                             {k.replace("/", "_"): v for k, v in row.items()}, step=step), gold_fn=gold)
    fingerprint = hf_trainers.fingerprint(cfg, SFT, REWARD, CLEAN / "instructions.train.jsonl")
    history = trainer.train(prompts, WORK, fingerprint, references)
    tracking.plot_against(history, "objective/kl", ["objective/scores", "objective/gold"],
                          "PPO: proxy (reward model) and gold score against KL to SFT", OVEROPT_PNG)
    return (policy.merge_and_unload() if cfg.ppo.lora else policy), history


def _texts(completions: list) -> list[str]:
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def task_rewards(task: Task) -> list:
    """GRPO's reward functions (TRL calls each with the completions and the dataset's columns)."""
    def correct(prompts: list, completions: list, reference: list[str], **_) -> list[float]:
        """The task's verifiable reward: 1.0 for the reference's answer (free-form: chrF / 100)."""
        return [task.reward(t, ref, p) for t, ref, p in zip(_texts(completions), reference, prompts)]

    def format(completions: list, **_) -> list[float]:  # noqa: A001 (TRL logs rewards/<function name>)
        """1.0 when the completion has the form the task asks for (sentiment: one short sentence giving a reason)."""
        return [float(bool(task.format_ok(t))) for t in _texts(completions)]

    return [correct, format] if task.format_ok("") is not None else [correct]


def gold_reward(task: Task):
    """The task's gold score as a GRPO reward function of weight 0: logged per step (rewards/gold/mean), never
    optimised."""
    def gold(prompts: list, completions: list, reference: list[str], **_) -> list[float]:
        return [task.gold(t, ref, p) for t, ref, p in zip(_texts(completions), reference, prompts)]

    return gold


def proxy_reward(tokenizer):
    """The reward stage's model as a GRPO reward function (scored as PPO and evaluate score it)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from core.lm import disable_dropout, load_pretrained, require_same_tokenizer, reward_scores

    require_same_tokenizer(tokenizer, REWARD, "reward model")
    model = load_pretrained(AutoModelForSequenceClassification, REWARD, "reward model").eval()
    model.requires_grad_(False)
    disable_dropout(model)

    def proxy(prompts: list, completions: list, **_) -> list[float]:
        with torch.no_grad():
            return reward_scores(model, tokenizer, prompts, _texts(completions))

    return proxy


def run_grpo(cfg: Config, tokenizer) -> tuple[torch.nn.Module, list[dict]]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from core import hf_trainers
    from core.hf_trainers import StageLog
    from core.lm import load_causal_lm

    grpo = cfg.grpo
    if grpo.batch_size % grpo.num_generations:
        raise ConfigError(f"align.grpo.batch_size ({grpo.batch_size}) must be a multiple of num_generations "
                          f"({grpo.num_generations})")
    task = load_task(cfg.task)
    records = read_jsonl(CLEAN / "instructions.train.jsonl")
    check_fit(task, records, str(CLEAN / "instructions.train.jsonl"))
    ds = Dataset.from_list([{"prompt": task.prompt(r), "reference": task.reference(r)} for r in records])
    rewards = task_rewards(task)
    rewards = rewards if len(rewards) == 2 and grpo.format_weight else rewards[:1]
    weights = [1.0, grpo.format_weight][: len(rewards)]
    if grpo.reward_model_weight:
        rewards.append(proxy_reward(tokenizer))
        weights.append(grpo.reward_model_weight)
    rewards.append(gold_reward(task))
    weights.append(0.0)
    args = GRPOConfig(**grpo.trl_args(WORK, cfg.seed), num_generations=grpo.num_generations,
                      max_completion_length=grpo.max_completion_length, beta=grpo.beta, temperature=grpo.temperature,
                      loss_type=grpo.loss_type, reward_weights=weights)
    trainer = GRPOTrainer(model=load_causal_lm(SFT), reward_funcs=rewards, args=args, train_dataset=ds,
                          processing_class=tokenizer, callbacks=[StageLog("align")])
    hf_trainers.train(trainer, "align", WORK, hf_trainers.fingerprint(cfg, SFT, CLEAN / "instructions.train.jsonl"))
    rows = hf_trainers.logged_rows(trainer, "reward")
    tracking.plot_against(rows, "kl", ["reward", "rewards/gold/mean"],
                          "GRPO: verifiable reward and gold score against KL to SFT", OVEROPT_PNG)
    return trainer.model, rows


def run(cfg: Config) -> dict:
    from core import hf_trainers, runtime
    from core.lm import load_tokenizer

    dev = runtime.setup(cfg.seed)
    shutil.rmtree(OVEROPT_DIR, ignore_errors=True)  # drawn by ppo and grpo (they sample while training), not dpo
    OVEROPT_DIR.mkdir(parents=True)
    tokenizer = load_tokenizer(SFT)
    if cfg.method == "dpo":
        model, history = run_dpo(cfg, tokenizer)
        keys = ["loss", "rewards/margins", "rewards/accuracies"]
    elif cfg.method == "grpo":
        model, history = run_grpo(cfg, tokenizer)
        keys = ["reward", "rewards/correct/mean", "rewards/format/mean", "rewards/proxy/mean", "rewards/gold/mean",
                "kl"]
    else:
        model, history = run_ppo(cfg, tokenizer, dev)
        keys = ["objective/scores", "objective/gold", "objective/kl", "objective/entropy"]
    hf_trainers.save_model(OUT_DIR, WORK, tokenizer, weight_bytes(model),
                           lambda folder: model.save_pretrained(folder, safe_serialization=True))
    last = history[-1] if history else {}
    metrics = {"method": cfg.method, **{k: v for k, v in last.items()
                                        if k != "step" and isinstance(v, float) and k not in tracking.WALL_CLOCK}}
    if cfg.method == "grpo":
        has_format = load_task(cfg.task).format_ok("") is not None
        metrics["format_weight"] = cfg.grpo.format_weight if has_format else 0.0
        metrics["reward_model_weight"] = cfg.grpo.reward_model_weight
    tracking.save_curves(history, f"align ({cfg.method})", PLOT_PNG, keys, PLOT_DATA)
    write_json(METRICS, metrics)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("align", Config, run)


if __name__ == "__main__":
    main()
