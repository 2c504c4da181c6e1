"""Stage `sft`: LoRA instruction tuning with TRL's SFTTrainer; the loss is on the answer tokens only.

Saves the adapter (artifacts/sft/adapter) and the merged model (artifacts/sft, loads with from_pretrained).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from core import runtime, tracking
from core.config import StageConfig
from core.errors import ConfigError
from core import hf_trainers
from core.hf_trainers import CheckpointLog, HistoryCallback, common_args
from core.hf_trainers import LoraSettings as BaseLora
from core.io import atomic_dir, read_jsonl, write_json, weight_bytes
from core.lm import load_causal_lm, load_tokenizer

CLEAN = Path("data/clean")
BASE = Path("artifacts/domain")
OUT_DIR = Path("artifacts/sft")
WORK = Path("checkpoints/sft")
METRICS = Path("metrics/sft.json")
PLOT_DATA = Path("plots/sft.json")
PLOT_PNG = Path("plots/sft_loss.png")


class LoraSettings(BaseLora):
    # The chat tokens (<|user|>, <|assistant|>, <|end|>) never occur in pretraining text: their embeddings
    # must train with the adapter (as LLaMA-Factory's `additional_target`), or the answer's first token
    # and the turn end stay unlearnable. Measured: SFT loss plateaus at ~1.5 without, ~0.4 with.
    modules_to_save: list[str] = ["embed_tokens"]


class Config(StageConfig):
    seed: int = 0
    steps: int = Field(gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(2e-3, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(256, gt=8)
    log_every: int = Field(10, gt=0)
    packing: bool = Field(False, description="pack conversations into max_length rows (TRL BFD packing)")
    quantization: Literal["none", "4bit"] = Field("none", description=(
        "4bit: QLoRA, the frozen base in 4-bit NF4 (bitsandbytes, CUDA only); the merged model is full precision"))
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory, slower steps")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: none)")
    lora: LoraSettings = LoraSettings()


def to_prompt_completion(records: list[dict]) -> list[dict]:
    """Canonical chat records -> TRL's conversational prompt/completion (loss on the completion only)."""
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]


def build_trainer(cfg: Config, model, tokenizer, records: list[dict], work_dir: Path, callbacks=()):
    """TRL's SFTTrainer with the LoRA adapter: prompt/completion rows, loss on the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg.lora.check(model, "sft.lora")
    tokenizer.padding_side = "right"
    args = SFTConfig(**common_args(work_dir, cfg.seed, cfg.steps, cfg.batch_size, cfg.lr, cfg.warmup_ratio,
                                   cfg.log_every, cfg.gradient_checkpointing, cfg.checkpoint_every),
                     max_length=cfg.max_length, completion_only_loss=True, packing=cfg.packing)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(to_prompt_completion(records)),
                      processing_class=tokenizer, peft_config=cfg.lora.peft_config("CAUSAL_LM"),
                      callbacks=list(callbacks))


def load_4bit(path: Path, cfg: Config):
    """The base model in 4-bit NF4 with double quantisation and bf16 compute, ready for k-bit training."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("sft.quantization: 4bit (QLoRA) needs a CUDA GPU and the bitsandbytes package "
                          "(pip install bitsandbytes); set it to none on this machine")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=bnb,
                                                 device_map={"": torch.cuda.current_device()})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


def sort_target_modules(config_file: Path) -> None:
    """PEFT writes target_modules from a set, in hash order: sorted, the adapter is the same bytes every run."""
    import json

    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run(cfg: Config) -> dict:
    runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(BASE)
    model = load_4bit(BASE, cfg) if cfg.quantization == "4bit" else load_causal_lm(BASE)
    history = HistoryCallback("sft")
    records = read_jsonl(CLEAN / "instructions.train.jsonl")
    trainer = build_trainer(cfg, model, tokenizer, records, WORK, [history, CheckpointLog("sft")])
    result = hf_trainers.train(trainer, "sft", WORK, hf_trainers.fingerprint(cfg, BASE, CLEAN / "instructions.train.jsonl"))
    peft_model = trainer.model
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    with atomic_dir(OUT_DIR, 2 * weight_bytes(peft_model)) as tmp:  # adapter + merged model
        peft_model.save_pretrained(tmp / "adapter")
        sort_target_modules(tmp / "adapter" / "adapter_config.json")
        if cfg.quantization == "4bit":  # merge into the full-precision base, not into 4-bit weights
            from peft import PeftModel

            merged = PeftModel.from_pretrained(load_causal_lm(BASE), tmp / "adapter").merge_and_unload()
        else:
            merged = peft_model.merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(WORK, ignore_errors=True)
    rows = hf_trainers.logged_rows(trainer, "loss")
    # the mean of the logged losses, not the trainer's own average (which restarts at a resume)
    mean_loss = sum(r["loss"] for r in rows) / len(rows) if rows else result.training_loss
    metrics = {"train_loss": mean_loss, "final_loss": rows[-1]["loss"] if rows else result.training_loss,
               "trainable_params": trainable, "trainable_share": trainable / total, "train_examples": len(records)}
    tracking.save_curves(rows, "sft (LoRA)", PLOT_PNG, ["loss", "learning_rate"], PLOT_DATA)
    write_json(METRICS, metrics)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("sft", Config, run)


if __name__ == "__main__":
    main()
