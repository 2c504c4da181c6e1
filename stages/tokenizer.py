"""Stage `tokenizer`: byte-level BPE (HF tokenizers) with special tokens and the chat template, then every
corpus split tokenized in parallel into memory-mapped token files (data/tokens, read by pretrain and domain).

Trained on the training splits only; reports bytes per token on held-out text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, field_validator
from tqdm import tqdm

from core.chat import CHAT_TEMPLATE, DOC_SEP, EOS, PAD, SPECIAL_TOKENS
from core.config import StageConfig
from core.errors import LifecycleError
from core.io import atomic_dir, read_jsonl, read_texts, write_json

# torch's modules (core.lm, core.tokens) are imported where they are used: `lifecycle run` imports every stage's
# Config to check params.yaml, and that check must not wait for torch

CLEAN = Path("data/clean")
OUT_DIR = Path("artifacts/tokenizer")
METRICS = Path("metrics/tokenizer.json")


class Config(StageConfig):
    vocab_size: int = Field(2048, gt=0)

    @field_validator("vocab_size")
    @classmethod
    def _room_for_special_tokens(cls, value: int) -> int:
        if value < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"{value} is smaller than the 256 byte symbols plus {len(SPECIAL_TOKENS)} special tokens")
        return value
    min_frequency: int = Field(2, ge=1)
    workers: int = Field(0, ge=0, description="tokenizing processes; 0 = all cores (up to 8)")


def training_texts() -> list[str]:
    texts = [t for name in ("general", "domain") for t in read_texts(CLEAN / name / "train")]
    for r in read_jsonl(CLEAN / "instructions.train.jsonl"):
        texts.extend(m["content"] for m in r["messages"])
    return texts


def build(texts: list[str], cfg: Config):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS, PAD)], clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def run(cfg: Config) -> dict:
    from core.lm import bytes_per_token

    tokenizer = build(training_texts(), cfg)
    metrics = {"vocab_size": len(tokenizer)}
    for name in ("general", "domain"):
        held = read_texts(CLEAN / name / "heldout")
        metrics[f"bytes_per_token_{name}"] = round(bytes_per_token(tokenizer, held), 4)
    # the chat template must round-trip through the special tokens
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.convert_tokens_to_ids("<|assistant|>") not in ids:
        raise LifecycleError("tokenizer: the chat template does not encode <|assistant|> as one special token; "
                             "core/chat.py CHAT_TEMPLATE and SPECIAL_TOKENS must agree")
    with atomic_dir(OUT_DIR) as tmp:
        tokenizer.save_pretrained(tmp)
    metrics["tokens"] = tokenize_corpora(tokenizer, cfg)
    write_json(METRICS, metrics)
    return metrics


def tokenize_corpora(tokenizer, cfg: Config) -> dict:
    """Every corpus split as a memory-mapped token file (see core/tokens.py), tokenized in parallel."""
    from core.tokens import TOKENS, default_workers, encode_parallel, write_meta, write_tokens

    separator = tokenizer.convert_tokens_to_ids(DOC_SEP)
    counts = {}
    with atomic_dir(TOKENS) as tmp:
        for corpus in ("general", "domain"):
            for split in ("train", "heldout"):
                texts = read_texts(CLEAN / corpus / split)
                ids = encode_parallel(str(OUT_DIR), texts, cfg.workers or default_workers())
                counts[f"{corpus}.{split}"] = write_tokens(tmp, f"{corpus}.{split}", tqdm(
                    ids, total=len(texts), desc=f"tokenize {corpus}.{split}", mininterval=2.0), separator,
                    len(tokenizer))
        write_meta(tmp, {"dtype": str(np.dtype(np.uint16) if len(tokenizer) <= 2 ** 16 else np.dtype(np.uint32)),
                         "vocab_size": len(tokenizer), "separator": separator, "files": counts})
    return counts


def main() -> None:
    from core.stage import stage_main

    stage_main("tokenizer", Config, run)


if __name__ == "__main__":
    main()
