"""Model helpers shared by stages: chat formatting, generation, perplexity, reward scores, KL."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from core.chat import CHAT_TEMPLATE, DOC_SEP, EOS, PAD, SPECIAL_TOKENS
from core.errors import InputError

def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(f"{path}: no {what} here (config.json missing); run the stage that produces it first")
    return path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise InputError(f"{path}: no tokenizer here (tokenizer.json missing); run the tokenizer stage first")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"  # generation pads on the left (and the saved tokenizer keeps it so)
    return tok


def right_padded(tokenizer):
    """A copy padding on the right, for TRL's trainers (their collators and losses expect it); the stage's own
    tokenizer stays left-padded for generation, so nothing has to be flipped back."""
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "right"
    return tok


def adopt_tokenizer(tok) -> int:
    """Give a checkpoint's own tokenizer the project's special tokens and chat template; returns tokens added."""
    added = tok.add_special_tokens({"eos_token": EOS, "pad_token": PAD, "additional_special_tokens":
                                    [t for t in SPECIAL_TOKENS if t not in (EOS, PAD)]},
                                   replace_extra_special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    return added


def load_pretrained(cls, path: str | Path, what: str = "model", **kwargs):
    """`cls.from_pretrained(path)` in fp32, with an error naming the directory when its files are damaged."""
    path = require_dir(path, what)
    try:
        return cls.from_pretrained(str(path), dtype=torch.float32, **kwargs)
    except Exception as exc:  # noqa: BLE001 (safetensors, torch and transformers each raise their own types)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot load the {what} ({type(exc).__name__}: {message[:300]}); "
                         "rerun the stage that produces it") from None


def load_causal_lm(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, path, trust_remote_code=trust_remote_code)


def same_tokenizer(a, b) -> bool:
    """The one test of tokenizer identity: the same vocabulary (token -> id), not merely the same size."""
    return a.get_vocab() == b.get_vocab()


def require_same_tokenizer(tokenizer, path: str | Path, what: str) -> None:
    """A model scored through `tokenizer` must have been trained with the same vocabulary."""
    theirs = load_tokenizer(path)
    if not same_tokenizer(theirs, tokenizer):
        raise InputError(f"{path}: the {what}'s tokenizer ({len(theirs)} tokens) differs from the one it is used "
                         f"with here ({len(tokenizer)} tokens); retrain the {what} from this pipeline's models")


def prompt_text(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def conversation_text(tokenizer, messages: list[dict], answer: str) -> str:
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[list[dict]], max_new_tokens: int, batch_size: int = 32,
             do_sample: bool = False, temperature: float = 1.0, generator: torch.Generator | None = None) -> list[str]:
    """Answers to chat prompts (greedy by default). Returns decoded text without the prompt."""
    out = []
    for ids, mask in prompt_batches(tokenizer, prompts, batch_size, model.device):
        seq = sample_tokens(model, ids, mask, max_new_tokens, tokenizer.eos_token_id, do_sample, temperature, generator)
        out.extend(decode_responses(tokenizer, seq[:, ids.shape[1]:]))
    return out


def prompt_batches(tokenizer, prompts, batch_size, device):
    texts = [prompt_text(tokenizer, p) for p in prompts]
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)
        yield enc["input_ids"].to(device), enc["attention_mask"].to(device)


def decode_responses(tokenizer, tokens: torch.Tensor) -> list[str]:
    texts = []
    for row in tokens.tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


@torch.no_grad()
def sample_tokens(model, input_ids, attention_mask, max_new_tokens, eos_id, do_sample=True, temperature=1.0,
                  generator=None) -> torch.Tensor:
    """A plain KV-cached decoding loop: deterministic given `generator`, pads finished rows with eos."""
    from transformers import DynamicCache

    model.eval()
    batch = input_ids.shape[0]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=cache, use_cache=True)
    seq, mask = input_ids, attention_mask
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    next_pos = position_ids[:, -1:] + 1
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()
        if do_sample:
            probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=out.past_key_values,
                    use_cache=True)
        next_pos = next_pos + 1
    return seq


def pack(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Documents joined by the document separator and cut into [n, seq_len] blocks (remainder dropped)."""
    sep = tokenizer.convert_tokens_to_ids(DOC_SEP)
    ids: list[int] = []
    for i in range(0, len(texts), 1000):
        for row in tokenizer(list(texts[i:i + 1000]), add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(sep)
    n = len(ids) // seq_len
    if n == 0:
        raise InputError(f"only {len(ids)} tokens of held-out text: fewer than one block of seq_len={seq_len}; "
                         "the clean stage's held-out split (data/clean/<corpus>/heldout) is too small: bring more "
                         "text, raise clean.heldout_min_docs, or see metrics/clean.json for what cleaning dropped")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def bytes_per_token(tokenizer, texts: Sequence[str]) -> float:
    """UTF-8 bytes per token of texts as `pack` and the token files join them (each document's tokens and its
    separator): the one definition, for the tokenizer's compression figure and for bits per byte."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) + 1 for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])
    return n_bytes / max(n_tokens, 1)


@torch.no_grad()
def nll_sum(model, blocks: torch.Tensor, batch_size: int = 16) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) over packed blocks, and the number of tokens scored."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size].to(model.device)
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += x[:, 1:].numel()
    return total, count


def mean_nll(model, blocks: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token negative log-likelihood (nats) over packed blocks."""
    total, count = nll_sum(model, blocks, batch_size)
    return total / max(count, 1)


def _conversation_batch(tokenizer, prompts, answers, device, max_length=512):
    """Right-padded chat conversations and, per row, where the answer starts."""
    ids, starts = [], []
    for p, a in zip(prompts, answers):
        prompt_ids = tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(conversation_text(tokenizer, p, a), add_special_tokens=False)["input_ids"]
        ids.append(full_ids[-max_length:])
        starts.append(max(len(prompt_ids) - (len(full_ids) - len(ids[-1])), 1))
    width = max(len(r) for r in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], device=device)
    return input_ids, mask, starts


@torch.no_grad()
def reward_scores(reward_model, tokenizer, prompts: Sequence[list[dict]], answers: Sequence[str],
                  batch_size: int = 32) -> list[float]:
    """Scalar reward of each (prompt, answer) conversation, read at its last real token."""
    reward_model.eval()
    scores: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask, _ = _conversation_batch(tokenizer, prompts[i:i + batch_size], answers[i:i + batch_size],
                                           reward_model.device)
        logits = reward_model(input_ids=ids, attention_mask=mask).logits  # the head reads the last non-pad token
        scores.extend(logits[:, 0].float().tolist())
    return scores


@torch.no_grad()
def answer_kl(policy, reference, tokenizer, prompts: Sequence[list[dict]], answers: Sequence[str],
              batch_size: int = 32) -> list[float]:
    """Exact KL(policy || reference) summed over the answer's tokens (full-vocabulary, per position)."""
    policy.eval()
    reference.eval()
    kls: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask, starts = _conversation_batch(tokenizer, prompts[i:i + batch_size], answers[i:i + batch_size],
                                                policy.device)
        lp = torch.log_softmax(policy(input_ids=ids, attention_mask=mask).logits.float(), -1)
        lq = torch.log_softmax(reference(input_ids=ids, attention_mask=mask).logits.float(), -1)
        per_pos = (lp.exp() * (lp - lq)).sum(-1)  # KL at each position predicting the next token
        for row, start in enumerate(starts):
            end = int(mask[row].sum()) - 1  # positions start-1 .. end-1 predict the answer tokens
            kls.append(per_pos[row, start - 1:end].sum().item())
    return kls


@torch.no_grad()
def sampled_kl(policy, reference, tokenizer, prompts: Sequence[list[dict]], samples: int, max_new_tokens: int,
               batch_size: int = 32, seed: int = 0) -> list[float]:
    """KL(policy || reference) over whole answers, per prompt: the mean over `samples` answers sampled from the
    policy at temperature 1 of the exact per-position KL summed along each answer. Its expectation is the
    sequence-level KL; one greedy answer would measure only the policy's mode."""
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    repeated = [p for p in prompts for _ in range(samples)]
    answers = generate(policy, tokenizer, repeated, max_new_tokens, batch_size, do_sample=True, temperature=1.0,
                       generator=generator)
    kls = answer_kl(policy, reference, tokenizer, repeated, answers, batch_size)
    return [sum(kls[i:i + samples]) / samples for i in range(0, len(kls), samples)]


def disable_dropout(model) -> None:
    """Dropout off in every module (TRL's disable_dropout_in_model): RLHF compares log-probabilities and values
    across forward passes, which dropout would make noisy and mode-dependent."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # applied functionally, not a module
            module.attention_dropout = 0.0


@torch.no_grad()
def answer_logprob(model, tokenizer, prompts, answers, batch_size: int = 32) -> list[float]:
    """Length-normalised log-probability of each given answer (e.g. the reference) given its prompt."""
    model.eval()
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask, starts = _conversation_batch(tokenizer, prompts[i:i + batch_size], answers[i:i + batch_size],
                                                model.device)
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        tok_lp = lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        for row, start in enumerate(starts):
            end = int(mask[row].sum()) - 1
            span = tok_lp[row, start - 1:end]
            out.append(span.mean().item() if span.numel() else 0.0)
    return out
