"""A compact PPO trainer for RLHF (TRL removed its PPOTrainer in 1.13).

Per update: sample answers from the policy, score them with the reward model, turn the score into
per-token rewards with a KL penalty to the frozen reference, estimate advantages with GAE from a value
model, then run a few epochs of clipped policy and value losses. The KL coefficient is fixed or adapted
(Ziegler et al. 2019). Logged names follow TRL's PPOTrainer (objective/kl, objective/scores, ...), and as in
TRL and OpenRLHF dropout is off in every model and the sampling temperature divides the logits wherever
log-probabilities are taken (the ratio, the KL and the entropy are of the distribution that was sampled). With a
`gold_fn`, each update also logs `objective/gold`: the score the run is judged by, which it does not optimise.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from core.errors import LifecycleError
from core.lm import decode_responses, disable_dropout, prompt_batches, sample_tokens
from core.settings import PPOSettings


# --------------------------------------------------------------------------- the maths, unit-tested
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, kl_coef: float):
    """Per-token reward: -kl_coef * (logp - logp_ref) everywhere, plus the score on the last real token."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over the answer tokens; returns (advantages, returns)."""
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    values = values * mask
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0)
        adv[:, t] = last * mask[:, t]
    return adv, (adv + values) * mask


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float):
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    # TRL's pg_clipfrac: where the clipped branch is the one taken (its gradient is zero), not merely |r - 1| > eps
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return masked_mean(torch.max(unclipped, clipped), mask), clipfrac


def clipped_value_loss(values, old_values, returns, mask, cliprange_value: float):
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    clipfrac = masked_mean(((values - returns) ** 2 < (clipped - returns) ** 2).float(), mask)
    return masked_mean(loss, mask), clipfrac


class AdaptiveKL:
    """Proportional controller that steers the per-answer KL toward a target."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(min(current_kl / self.target - 1, 0.2), -0.2)
        self.value *= 1 + error * n_steps / self.horizon


# --------------------------------------------------------------------------- the trainer
class ValueHead(torch.nn.Module):
    """Per-token values from a linear head on the policy's last hidden states; the backbone is the policy's."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.head = torch.nn.Linear(policy.config.hidden_size, 1, device=policy.device)
        torch.nn.init.normal_(self.head.weight, std=1 / math.sqrt(policy.config.hidden_size + 1))
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True)
        return SimpleNamespace(logits=self.head(out.hidden_states[-1].float()))


def token_logprobs(model, seq, attn, pos, start: int, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities of seq[:, start:] under the model's logits / temperature (the sampled distribution)."""
    logits = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, seq[:, start:, None]).squeeze(-1)


def token_values(value_model, seq, attn, pos, start: int) -> torch.Tensor:
    return value_model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, start - 1:-1, 0].float()


class PPOTrainer:
    def __init__(self, policy, reference, value_model, tokenizer,
                 score_fn: Callable[[list[list[dict]], list[str]], list[float]], settings: PPOSettings, seed: int,
                 log_fn: Callable[[dict, int], None] | None = None,
                 gold_fn: Callable[[list[list[dict]], list[str], list[str]], list[float]] | None = None):
        self.policy, self.reference, self.value_model = policy, reference, value_model
        self.tokenizer, self.score_fn, self.settings = tokenizer, score_fn, settings
        self.log_fn = log_fn or (lambda row, step: None)
        self.gold_fn = gold_fn
        for model in (policy, reference, value_model):
            disable_dropout(model)
        self.gen = torch.Generator(device=policy.device).manual_seed(seed)
        self.rng = random.Random(seed)
        self.kl = AdaptiveKL(settings.kl_coef, settings.target_kl, settings.kl_horizon)
        params = list({id(p): p for p in [*policy.parameters(), *value_model.parameters()]
                       if p.requires_grad}.values())  # a value head shares the policy's parameters
        self.opt = torch.optim.AdamW(params, lr=settings.lr, eps=1e-5)
        reference.requires_grad_(False)

    @torch.no_grad()
    def rollout(self, prompts: Sequence[list[dict]]) -> dict:
        cfg, tok = self.settings, self.tokenizer
        (ids, attn), = list(prompt_batches(tok, prompts, len(prompts), self.policy.device))
        seq = sample_tokens(self.policy, ids, attn, cfg.max_new_tokens, tok.eos_token_id, True, cfg.temperature,
                            self.gen)
        start = ids.shape[1]
        response = seq[:, start:]
        # answer mask: every token up to and including the first eos
        is_eos = response == tok.eos_token_id
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        mask = (~after_eos).float()
        finished = is_eos.any(1)
        full_attn = torch.cat([attn, mask.long()], dim=1)
        pos = (full_attn.cumsum(-1) - 1).clamp(min=0)
        self.policy.eval()
        self.value_model.eval()
        logprobs = token_logprobs(self.policy, seq, full_attn, pos, start, cfg.temperature)
        ref_logprobs = token_logprobs(self.reference, seq, full_attn, pos, start, cfg.temperature)
        values = token_values(self.value_model, seq, full_attn, pos, start)
        texts = decode_responses(tok, response)
        scores = torch.tensor(self.score_fn(list(prompts), texts), dtype=torch.float32, device=seq.device)
        scores = scores - self.settings.missing_eos_penalty * (~finished).float()
        return dict(seq=seq, attn=full_attn, pos=pos, start=start, mask=mask, logprobs=logprobs,
                    ref_logprobs=ref_logprobs, values=values, scores=scores, texts=texts, finished=finished)

    def step(self, prompts: Sequence[list[dict]], step: int, references: Sequence[str] | None = None) -> dict:
        cfg = self.settings
        batch = self.rollout(prompts)
        mask = batch["mask"]
        rewards, kl = kl_penalised_rewards(batch["logprobs"], batch["ref_logprobs"], batch["scores"], mask,
                                           self.kl.value)
        advantages, returns = gae(rewards, batch["values"], mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac", "approxkl")}
        self.policy.train()
        self.value_model.train()
        n = len(prompts)
        for _ in range(cfg.ppo_epochs):
            order = list(range(n))
            self.rng.shuffle(order)
            for i in range(0, n, cfg.mini_batch_size):
                idx = torch.tensor(order[i:i + cfg.mini_batch_size], device=mask.device)
                seq, attn, pos, m = batch["seq"][idx], batch["attn"][idx], batch["pos"][idx], mask[idx]
                new_lp = token_logprobs(self.policy, seq, attn, pos, batch["start"], cfg.temperature)
                new_v = token_values(self.value_model, seq, attn, pos, batch["start"])
                pg_loss, pg_clip = clipped_policy_loss(new_lp, batch["logprobs"][idx], advantages[idx], m,
                                                       cfg.cliprange)
                vf_loss, vf_clip = clipped_value_loss(new_v, batch["values"][idx], returns[idx], m, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                if not torch.isfinite(loss):
                    raise LifecycleError(f"PPO loss is {loss.item()} at step {step}; lower align.ppo.lr (the last "
                                         "good checkpoint, if any, is kept)")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], cfg.grad_clip)
                self.opt.step()
                with torch.no_grad():
                    stats["approxkl"].append(masked_mean(0.5 * (new_lp - batch["logprobs"][idx]) ** 2, m).item())
                for k, v in (("pg_loss", pg_loss), ("vf_loss", vf_loss), ("pg_clipfrac", pg_clip),
                             ("vf_clipfrac", vf_clip)):
                    stats[k].append(float(v.detach()))
        mean_kl = kl.sum(1).mean().item()
        row = {
            "objective/kl": mean_kl, "objective/scores": batch["scores"].mean().item(),
            "objective/rlhf_reward": (batch["scores"] - self.kl.value * kl.sum(1)).mean().item(),
            "objective/kl_coef": self.kl.value,
            # TRL's objective/entropy: the sampled answers' summed negative log-probability, per answer
            "objective/entropy": (-batch["logprobs"] * mask).sum(1).mean().item(),
            "policy/clipfrac_avg": _avg(stats["pg_clipfrac"]),
            "policy/approxkl_avg": _avg(stats["approxkl"]), "loss/policy_avg": _avg(stats["pg_loss"]),
            "loss/value_avg": _avg(stats["vf_loss"]), "val/clipfrac_avg": _avg(stats["vf_clipfrac"]),
            "val/mean": masked_mean(batch["values"], mask).item(), "val/num_eos_tokens": float(batch["finished"].sum()),
            "response_length": mask.sum(1).mean().item(),
        }
        if self.gold_fn is not None and references is not None:
            row["objective/gold"] = _avg(self.gold_fn(list(prompts), batch["texts"], list(references)))
        if cfg.adaptive_kl:
            self.kl.update(mean_kl, n)
        self.log_fn(row, step)
        return row

    def train(self, prompts: Sequence[list[dict]], checkpoint_dir: Path | None = None,
              fingerprint: str = "", references: Sequence[str] | None = None) -> list[dict]:
        """All rounds; with `checkpoint_dir` and `checkpoint_every`, resumable after a kill on the same curve.
        `references` (one per prompt) lets `gold_fn` score each update's answers."""
        every = self.settings.checkpoint_every if checkpoint_dir else 0
        history = self.load(checkpoint_dir, fingerprint) if every else []
        if history:
            print(f"ppo: resumed from {checkpoint_dir / 'last'} at step {len(history)}", flush=True)
        for step in tqdm(range(len(history) + 1, self.settings.steps + 1), desc="ppo", mininterval=2.0,
                         initial=len(history), total=self.settings.steps):
            picks = [self.rng.randrange(len(prompts)) for _ in range(self.settings.batch_size)]
            row = self.step([prompts[i] for i in picks], step,
                            [references[i] for i in picks] if references is not None else None)
            history.append({"step": step, **row})
            if every and step % every == 0 and step < self.settings.steps:
                self.save(checkpoint_dir, history, fingerprint)
                print(f"ppo: checkpoint at step {step} in {checkpoint_dir / 'last'}", flush=True)
        return history

    def save(self, directory: Path, history: list[dict], fingerprint: str) -> None:
        from safetensors.torch import save_file

        from core.io import atomic_dir, weight_bytes

        def tensors(module) -> dict:  # cloned: tied weights share storage, which safetensors refuses
            return {k: v.detach().clone().contiguous().cpu() for k, v in module.state_dict().items()}

        need = 3 * weight_bytes(self.policy) + weight_bytes(self.value_model)  # + Adam moments
        with atomic_dir(directory / "last", need) as tmp:
            save_file(tensors(self.policy), tmp / "policy.safetensors")
            save_file(tensors(self.value_model), tmp / "value.safetensors")
            torch.save({"optimizer": self.opt.state_dict(), "generator": self.gen.get_state(),
                        # dropout (e.g. a token-classification value head's) draws from the global generators
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                        "rng": self.rng.getstate(), "kl_coef": self.kl.value, "history": history,
                        "fingerprint": fingerprint}, tmp / "state.pt")

    def load(self, directory: Path, fingerprint: str) -> list[dict]:
        """The history so far, with every weight and RNG restored; [] when there is nothing of this run."""
        from safetensors.torch import load_file

        last = directory / "last"
        if not (last / "state.pt").exists():
            return []
        try:
            state = torch.load(last / "state.pt", weights_only=True)
        except Exception as exc:  # a damaged checkpoint must not stop a fresh start
            print(f"warning: ignoring unreadable checkpoint {last}: {exc}", flush=True)
            return []
        if state.get("fingerprint") != fingerprint:
            print(f"note: {last} belongs to a different configuration or data; starting from scratch", flush=True)
            return []
        device = self.policy.device
        self.policy.load_state_dict(load_file(last / "policy.safetensors", device=str(device)))
        self.value_model.load_state_dict(load_file(last / "value.safetensors", device=str(device)))
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.rng.setstate(state["rng"])
        self.kl.value = state["kl_coef"]
        return state["history"]


def _avg(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan
