"""Stage `sft`: LoRA instruction tuning with TRL's SFTTrainer; the loss is on the answer tokens only.

Beside the adapter the tied embedding trains (a PEFT module to save): the chat tokens never occur in pretraining,
and on the demo an adapter with only their rows could not fit the answers (one label for every review). Trained
on answer-only loss, the embedding alone would break the language model (held-out general perplexity x60);
replaying documents of the clean corpora as plain-text rows holds it (x1.20 at 25 %). `lora.trainable_tokens`
trains only the listed rows (their gradients masked on the saved copy; PEFT's trainable_token_indices would do
the same, but TRL's fused LM head reads the base weight past its wrapper). metrics/sft.json reports held-out
general and domain perplexity before and after, so a recipe that breaks the language model shows here first.
Saves the adapter (artifacts/sft/adapter) and the merged model (artifacts/sft, loads with from_pretrained).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from core import tracking
from core.chat import SPECIAL_TOKENS
from core.errors import ConfigError
from core.io import read_jsonl, read_texts, weight_bytes, write_json
from core.settings import LoraSettings as BaseLora
from core.settings import TrainerSettings

# torch, transformers and TRL (and core.lm, core.hf_trainers) are imported where they are used: `lifecycle run`
# imports every stage's Config to check params.yaml, and that check must not wait for them

CLEAN = Path("data/clean")
BASE = Path("artifacts/domain")
OUT_DIR = Path("artifacts/sft")
WORK = Path("checkpoints/sft")
METRICS = Path("metrics/sft.json")
PLOT_DATA = Path("plots/sft.json")
PLOT_PNG = Path("plots/sft_loss.png")


REPLAY_SYSTEM = "Plain text."
CHAT_TOKENS = [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|pad|>")]


class LoraSettings(BaseLora):
    # The chat tokens (<|user|>, <|assistant|>, <|end|>) never occur in pretraining text: their embedding rows
    # must train with the adapter, or the answer's first token and the turn end stay unlearnable. On the demo the
    # adapter with only those rows still could not fit the answers (loss 1.7, one label for every review; with
    # every row: 0.4 and accuracy 0.9), so by default the whole tied embedding trains and replay keeps the LM.
    modules_to_save: list[str] = ["embed_tokens"]
    trainable_tokens: list[str] | None = Field(None, description=(
        "only these rows of the saved embedding train, e.g. the chat tokens (null: every row)"))


class Config(TrainerSettings):
    seed: int = 0
    lr: float = Field(2e-3, gt=0)
    max_length: int = Field(256, gt=8)
    packing: bool = Field(False, description="pack conversations into max_length rows (TRL BFD packing)")
    quantization: Literal["none", "4bit"] = Field("none", description=(
        "4bit: QLoRA, the frozen base in 4-bit NF4 (bitsandbytes, CUDA only); the merged model is full precision"))
    init_chat_rows: Literal["mean", "keep"] = Field("mean", description=(
        "mean: the chat tokens' embedding rows start at the mean row (they never occur in pretraining text); "
        "keep: as the base has them (pretrain.instruction_mix > 0 or a chat checkpoint)"))
    replay_fraction: float = Field(0.0, ge=0, lt=1, description=(
        "share of training rows that are documents of the clean general and domain corpora, trained as plain text"))
    completion_only_loss: bool = Field(True, description=(
        "loss on the answers only; false: on the prompts too, which anchors the language model on their text"))
    eval_seq_len: int = Field(128, gt=1, description="held-out perplexity block length (evaluate's seq_len)")
    embedding_lr: float | None = Field(None, gt=0, description=(
        "learning rate of the embedding rows that train beside the adapter (null: lr); every step they take moves "
        "the tied output layer over the whole vocabulary, so this rate sets how far the language model drifts"))
    lora: LoraSettings = LoraSettings()


def to_prompt_completion(records: list[dict]) -> list[dict]:
    """Canonical chat records -> TRL's conversational prompt/completion (loss on the completion only)."""
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]


def replay_rows(texts: list[str], n: int, seed: int) -> list[dict]:
    """`n` documents as rows whose completion is the document (behind a fixed system turn: TRL needs a prompt):
    their tokens keep the language-model loss on the corpora the base learned while the adapter and chat rows
    learn the task (replay, as the domain stage does)."""
    picks = random.Random(seed).sample(texts, min(n, len(texts)))
    return [{"prompt": [{"role": "system", "content": REPLAY_SYSTEM}],
             "completion": [{"role": "assistant", "content": t}]} for t in picks]


def build_trainer(cfg: Config, model, tokenizer, records: list[dict], work_dir: Path, callbacks=(),
                  replay: list[str] = ()):
    """TRL's SFTTrainer with the LoRA adapter: prompt/completion rows (plus replayed corpus documents), loss on
    the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from core.lm import right_padded

    cfg.lora.check(model, "sft.lora")
    if cfg.init_chat_rows == "mean":
        mean_init_rows(model, token_rows(tokenizer, CHAT_TOKENS))
    args = SFTConfig(**cfg.trl_args(work_dir, cfg.seed), max_length=cfg.max_length,
                     completion_only_loss=cfg.completion_only_loss, packing=cfg.packing)
    rows = to_prompt_completion(records)
    if replay and cfg.replay_fraction:
        # replay_fraction of the rows are documents: n / (len(records) + n) = fraction
        n = round(len(records) * cfg.replay_fraction / (1 - cfg.replay_fraction))
        rows = rows + replay_rows(list(replay), n, cfg.seed)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=right_padded(tokenizer), peft_config=cfg.lora.peft_config("CAUSAL_LM"),
                         callbacks=list(callbacks))
    if cfg.lora.trainable_tokens is not None:
        train_only_rows(trainer.model, token_rows(tokenizer, cfg.lora.trainable_tokens), len(tokenizer))
    if cfg.embedding_lr is not None:
        trainer.optimizer = two_rate_adamw(trainer.model, args, cfg.embedding_lr)
    return trainer


def two_rate_adamw(model, args, embedding_lr: float):
    """AdamW with the Trainer's betas, eps and weight decay, the saved embedding (PEFT's modules_to_save copy) in a
    group at its own learning rate; the Trainer's scheduler scales both groups alike (it keeps an optimizer it is
    given, and saves it in its checkpoints)."""
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    embedding = [p for n, p in trainable if "embed_tokens" in n]
    if not embedding:
        raise ConfigError("sft.embedding_lr is set but no embedding row trains: add embed_tokens to "
                          "sft.lora.modules_to_save or set sft.embedding_lr to null")
    rest = [p for n, p in trainable if "embed_tokens" not in n]
    return torch.optim.AdamW([{"params": rest}, {"params": embedding, "lr": embedding_lr}], lr=args.learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                             weight_decay=args.weight_decay)


def mean_init_rows(model, rows: list[int]) -> None:
    """Set these rows of the input (and tied output) embedding to the mean of the others, as transformers'
    resize_token_embeddings does for new tokens: a token never seen in pretraining keeps its random init and a
    logit pushed far down by every softmax, which SFT must first undo."""
    import torch

    weight = model.get_input_embeddings().weight
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[rows] = False
    with torch.no_grad():
        weight[rows] = weight[others].mean(0)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != weight.data_ptr():
            out.weight[rows] = out.weight[others].mean(0)


def train_only_rows(model, rows: list[int], vocab_size: int) -> None:
    """Zero the gradient of every trainable embedding row but `rows` (tied input/output embedding: one tensor).
    With no weight decay (HF's default), Adam then leaves those rows exactly as they were."""
    import torch

    keep = torch.zeros(vocab_size, 1)
    keep[rows] = 1.0
    for name, param in model.named_parameters():
        if param.requires_grad and param.dim() == 2 and param.shape[0] == vocab_size:
            param.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))


def token_rows(tokenizer, tokens: list[str]) -> list[int]:
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ConfigError(f"sft.lora.trainable_tokens: {missing} not in the tokenizer's vocabulary")
    return [vocab[t] for t in tokens]


def heldout_ppl(model, tokenizer, seq_len: int, batch_size: int) -> dict[str, float]:
    """Held-out general and domain perplexity (the clean stage's held-out split, as evaluate packs it)."""
    from core.lm import mean_nll, pack

    return {f"ppl_{c}": math.exp(mean_nll(model, pack(tokenizer, read_texts(CLEAN / c / "heldout"), seq_len),
                                          batch_size)) for c in ("general", "domain")}


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
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run(cfg: Config) -> dict:
    from core import hf_trainers, runtime
    from core.hf_trainers import StageLog
    from core.lm import load_causal_lm, load_tokenizer

    runtime.setup(cfg.seed)
    tokenizer = load_tokenizer(BASE)
    model = load_4bit(BASE, cfg) if cfg.quantization == "4bit" else load_causal_lm(BASE)
    cfg.lora.check(model, "sft.lora")  # a config error before any data is read
    records = read_jsonl(CLEAN / "instructions.train.jsonl")
    # replay what the base was last trained on: the general and the domain corpus, as the domain stage mixes them
    replay = [t for c in ("general", "domain") for t in read_texts(CLEAN / c / "train")] if cfg.replay_fraction else []
    trainer = build_trainer(cfg, model, tokenizer, records, WORK, [StageLog("sft")], replay)
    before = heldout_ppl(load_causal_lm(BASE), tokenizer, cfg.eval_seq_len, cfg.batch_size)
    inputs = [CLEAN / "instructions.train.jsonl"] + [CLEAN / c / "train" for c in ("general", "domain") if replay]
    result = hf_trainers.train(trainer, "sft", WORK, hf_trainers.fingerprint(cfg, BASE, *inputs))
    peft_model = trainer.model
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if cfg.lora.trainable_tokens is not None:  # the saved embedding copy trains only the listed rows
        embedding = peft_model.get_input_embeddings().weight
        trainable -= embedding.numel() - len(cfg.lora.trainable_tokens) * embedding.shape[1]
    total = sum(p.numel() for p in peft_model.parameters())

    def write_weights(folder: Path) -> None:  # the adapter first: merging takes it out of peft_model
        peft_model.save_pretrained(folder / "adapter")
        sort_target_modules(folder / "adapter" / "adapter_config.json")
        if cfg.quantization == "4bit":  # merge into the full-precision base, not into 4-bit weights
            from peft import PeftModel

            merged = PeftModel.from_pretrained(load_causal_lm(BASE), folder / "adapter").merge_and_unload()
        else:
            merged = peft_model.merge_and_unload()
        merged.save_pretrained(folder, safe_serialization=True)

    hf_trainers.save_model(OUT_DIR, WORK, tokenizer, 2 * weight_bytes(peft_model), write_weights)  # adapter + merged
    rows = hf_trainers.logged_rows(trainer, "loss")
    # the mean of the logged losses, not the trainer's own average (which restarts at a resume)
    mean_loss = sum(r["loss"] for r in rows) / len(rows) if rows else result.training_loss
    after = heldout_ppl(load_causal_lm(OUT_DIR), tokenizer, cfg.eval_seq_len, cfg.batch_size)  # as saved
    metrics = {"train_loss": mean_loss, "final_loss": rows[-1]["loss"] if rows else result.training_loss,
               "trainable_params": trainable, "trainable_share": trainable / total, "train_examples": len(records),
               **after, **{f"{k}_before": v for k, v in before.items()},
               **{f"{k}_ratio": after[k] / before[k] for k in after}}
    tracking.save_curves(rows, "sft (LoRA)", PLOT_PNG, ["loss", "learning_rate"], PLOT_DATA)
    write_json(METRICS, metrics)
    return metrics


def main() -> None:
    from core.stage import stage_main

    stage_main("sft", Config, run)


if __name__ == "__main__":
    main()
