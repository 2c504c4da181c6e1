"""The training settings the stages' configs are made of (LoRA, the TRL stages' shared knobs, the causal-LM loop,
PPO): pydantic only, no torch, so `lifecycle run` checks every section of params.yaml in a second, before any
heavy import, server or stage."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.config import StageConfig
from core.errors import ConfigError

Strategy = Literal["ddp", "fsdp"]  # how a multi-process run is spread (core.distributed)

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(StageConfig):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ALL_LINEAR
    modules_to_save: list[str] = []

    def peft_config(self, task_type: str):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, modules_to_save=self.modules_to_save or None,
                          ensure_weight_tying=True, task_type=task_type)

    def check(self, model, where: str) -> None:
        """Every target module exists in the model (PEFT's own error does not say which key to fix)."""
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in self.target_modules if t not in names]
        if missing:
            raise ConfigError(f"{where}.target_modules: {missing} not found in the model "
                              f"(linear layers here: {sorted(n for n in names if n.endswith('proj'))})")


class TrainerSettings(StageConfig):
    """The training knobs every TRL stage (sft, reward, align.dpo, align.grpo) shares; each stage's class sets its
    own defaults where TRL's differ by method (lr, warmup)."""
    steps: int = Field(gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    log_every: int = Field(10, gt=0)
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory, slower steps")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: none)")

    def trl_args(self, output_dir: Path, seed: int) -> dict:
        """Arguments for a TRL config. bf16 only on a GPU that supports it. TRL turns gradient checkpointing on
        by default; it only trades time for memory, so it is a per-stage choice here, off by default
        (benchmarks/results/align.json measures the difference). `checkpoint_every` > 0 saves a resumable
        checkpoint (weights, optimizer, scheduler, RNG states) every so many steps, the last two kept."""
        import torch

        gpu = torch.cuda.is_available()
        return dict(
            output_dir=str(output_dir), seed=seed, data_seed=seed, max_steps=self.steps,
            per_device_train_batch_size=self.batch_size, learning_rate=self.lr, lr_scheduler_type="cosine",
            warmup_steps=max(1, int(self.warmup_ratio * self.steps)), logging_steps=self.log_every,
            save_strategy="steps" if self.checkpoint_every else "no", save_steps=self.checkpoint_every or self.steps,
            save_total_limit=2, report_to="none", use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(),
            dataloader_num_workers=0, disable_tqdm=False, max_grad_norm=1.0,
            gradient_checkpointing=self.gradient_checkpointing,
        )


# settings a checkpoint resumes across (how the run is spread over processes): left out of its fingerprint
RESUMABLE_ACROSS = {"processes", "strategy"}


class TrainSettings(StageConfig):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="sequences per optimizer step (split over grad_accum micro-batches)")
    lr: float | None = Field(None, gt=0, description="pretrain derives one from the model width when unset")
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps spent decaying at the end")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    grad_accum: int = Field(1, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA with bf16")
    compile: bool = False
    eval_every: int = Field(50, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="0: no mid-run checkpoints (no resume)")
    processes: int = Field(1, ge=1, description="ranks under `accelerate launch` (GPUs, or CPU processes)")
    strategy: Strategy = Field("ddp", description="with processes > 1: ddp, or fsdp (FSDP2 sharding)")


class PPOSettings(StageConfig):
    steps: int = Field(gt=0, description="rollout + optimisation rounds")
    batch_size: int = Field(16, gt=0, description="prompts per rollout")
    mini_batch_size: int = Field(8, gt=0)
    ppo_epochs: int = Field(2, gt=0)
    lr: float = Field(1e-5, gt=0)
    max_new_tokens: int = Field(12, gt=0)
    temperature: float = Field(1.0, gt=0)
    kl_coef: float = Field(0.05, ge=0)
    adaptive_kl: bool = False
    target_kl: float = Field(6.0, gt=0, description="adaptive: target KL per answer (nats)")
    kl_horizon: int = Field(10000, gt=0)
    cliprange: float = Field(0.2, gt=0)
    cliprange_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    missing_eos_penalty: float = Field(1.0, ge=0, description="subtracted from the score of an unfinished answer")
    grad_clip: float = Field(1.0, gt=0)
    value: Literal["model", "head"] = Field("model", description=(
        "model: a separate value model initialised from the reward model; head: a linear head on the policy's "
        "own hidden states (shared backbone, TRL's AutoModelForCausalLMWithValueHead)"))
    lora: LoraSettings | None = Field(None, description="train the policy through a LoRA adapter (merged at the end)")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N rounds (0: none)")
