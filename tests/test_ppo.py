import pytest
import torch

from core import ppo


def test_kl_penalised_rewards_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, kl = ppo.kl_penalised_rewards(logp, ref, torch.tensor([2.0, -1.0]), mask, kl_coef=0.1)
    # row 0: kl = [0.5, -1, 0] -> -0.1*kl, score added on the last real token (index 2)
    assert torch.allclose(rewards[0], torch.tensor([-0.05, 0.1, 2.0]))
    # row 1: only the first token is real: kl 1.0 -> -0.1 + score -1
    assert torch.allclose(rewards[1], torch.tensor([-1.1, 0.0, 0.0]))
    assert torch.allclose(kl.sum(1), torch.tensor([-0.5, 1.0]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    adv, ret = ppo.gae(rewards, values, mask, gamma, lam)
    d2 = 1.0 - 0.4
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, adv + values)


def test_gae_stops_at_the_end_of_the_answer():
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    values = torch.tensor([[0.1, 0.3, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # third token is padding after eos
    adv, ret = ppo.gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[1.0 - 0.1, 1.0 - 0.3, 0.0]]))
    assert ret[0, 2] == 0


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.7]]))  # ratios 1.5 and 0.7
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, clipfrac = ppo.clipped_policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 ; token 1: max(0.7, 0.8) = 0.8
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert clipfrac.item() == pytest.approx(1.0)  # both tokens take the clipped branch


def test_clip_fraction_counts_only_where_the_clipped_branch_is_taken():
    # TRL's pg_clipfrac: ratio 1.5 with a negative advantage is outside the band, but the unclipped term
    # (1.5) is the larger loss, so the gradient flows and the token is not clipped; |r - 1| > eps would count it
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.7, 1.1]]))
    adv = torch.tensor([[-1.0, 1.0, 1.0]])
    loss, clipfrac = ppo.clipped_policy_loss(new, old, adv, torch.ones(1, 3), cliprange=0.2)
    assert loss.item() == pytest.approx((1.5 - 0.7 - 1.1) / 3)
    assert clipfrac.item() == pytest.approx(0.0)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, clipfrac = ppo.clipped_value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (1-2)^2=1, clipped 0.7 -> (0.7-2)^2=1.69 -> max 1.69 ; token 1: 1 and 1
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_masked_whiten_and_adaptive_kl():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo.masked_whiten(x, mask)
    assert ppo.masked_mean(w, mask).abs() < 1e-6 and w[0, 3] == 0
    ctl = ppo.AdaptiveKL(0.1, target=1.0, horizon=100)
    ctl.update(current_kl=3.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))


def test_grpo_rewards_come_from_the_task():
    from stages.align import task_rewards
    from tasks import TaskConfig, load_task

    completions = [[{"role": "assistant", "content": "The review is positive."}],
                   [{"role": "assistant", "content": "negative"}],
                   [{"role": "assistant", "content": "positive, I think not"}],
                   "negative",
                   "The review is negative.\nThe review is negative.",
                   "the review is negative."]
    refs = ["positive", "The review is positive.", "positive", "negative", "negative", "negative"]
    prompts = [[{"role": "user", "content": "Is it good?"}]] * 6
    correct, form = task_rewards(load_task(TaskConfig(name="sentiment")))
    assert correct(prompts, completions, reference=refs) == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # the format rule: one short sentence giving a reason (whether the reason is the review's is gold's)
    assert form(completions) == [0.0] * 6
    assert form(["Negative, because the lid is weak.", "Negative, because it broke.",
                 "Negative, because the lid is weak. I hope this helps."]) == [1.0, 0.0, 0.0]
    # a numeric task has no format rule: correctness alone
    rewards = task_rewards(load_task(TaskConfig(name="numeric")))
    assert len(rewards) == 1
    assert rewards[0]([[]] * 2, ["so 1,000 in all", "it is 7"], reference=["x\n#### 1000", "#### 8"]) == [1.0, 0.0]


def test_ppo_step_with_a_value_head_and_a_lora_policy():
    from peft import get_peft_model

    from core.ppo import PPOTrainer, ValueHead
    from core.settings import LoraSettings, PPOSettings

    tok, model = tiny_setup()
    lora = LoraSettings(r=2, alpha=4, modules_to_save=[])
    policy = get_peft_model(model(), lora.peft_config("CAUSAL_LM"))
    head = ValueHead(policy)
    settings = PPOSettings(steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=3, lr=1e-2, lora=lora,
                           value="head")
    trainer = PPOTrainer(policy, model(), head, tok, lambda p, a: [float(len(x)) for x in a], settings, seed=0)
    trained = {id(p) for g in trainer.opt.param_groups for p in g["params"]}
    names = {n for n, p in head.named_parameters() if id(p) in trained}
    assert names and all("lora_" in n or n.startswith("head.") for n in names)  # adapter + value head only
    assert {"head.weight", "head.bias"} <= names
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    before_head = head.head.weight.detach().clone()
    row = trainer.step([[{"role": "user", "content": "Is it positive?"}]] * 4, 1)
    assert {"objective/kl", "objective/scores", "loss/value_avg", "policy/clipfrac_avg"} <= set(row)
    assert not torch.equal(before_head, head.head.weight)
    assert all(torch.equal(frozen[n], p) for n, p in policy.named_parameters() if n in frozen)


def tiny_setup(dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages import tokenizer as tokenizer_stage

    tok = tokenizer_stage.build(["The review is positive.", "The review is negative."] * 50,
                                tokenizer_stage.Config(vocab_size=300))
    tok.padding_side = "left"

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64, tie_word_embeddings=True,
                                            attention_dropout=dropout, pad_token_id=tok.pad_token_id,
                                            eos_token_id=tok.eos_token_id))
    return tok, model


def test_log_probabilities_are_of_the_tempered_distribution():
    from core.ppo import PPOTrainer, ValueHead, token_logprobs
    from core.settings import PPOSettings

    tok, model = tiny_setup()
    policy = model()
    seq = torch.tensor([[5, 6, 7, 8]])
    attn, pos = torch.ones_like(seq), torch.arange(4)[None]
    logits = policy(input_ids=seq).logits[:, 1:-1].float()
    want = torch.log_softmax(logits / 0.5, -1).gather(-1, seq[:, 2:, None]).squeeze(-1)
    assert torch.allclose(token_logprobs(policy, seq, attn, pos, 2, temperature=0.5), want, atol=1e-6)
    assert not torch.allclose(token_logprobs(policy, seq, attn, pos, 2), want, atol=1e-3)
    # the rollout's logprobs (the ratio's old side and the KL) use the sampling temperature
    settings = PPOSettings(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=3, temperature=0.5, value="head")
    trainer = PPOTrainer(policy, model(), ValueHead(policy), tok, lambda p, a: [0.0] * len(a), settings, seed=0)
    batch = trainer.rollout([[{"role": "user", "content": "Is it positive?"}]] * 2)
    again = token_logprobs(policy, batch["seq"], batch["attn"], batch["pos"], batch["start"], 0.5)
    assert torch.allclose(batch["logprobs"], again, atol=1e-5)


def test_dropout_is_off_in_policy_reference_and_value_models():
    from transformers import LlamaConfig, LlamaForTokenClassification

    from core.ppo import PPOTrainer
    from core.settings import PPOSettings

    tok, model = tiny_setup(dropout=0.5)
    policy, reference = model(), model()
    value = LlamaForTokenClassification(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=1,
                                                    attention_dropout=0.5, classifier_dropout=0.5,
                                                    pad_token_id=tok.pad_token_id))
    seq = torch.tensor([[5, 6, 7, 8, 9, 10]])
    value.train()
    noisy = [value(input_ids=seq).logits for _ in range(2)]
    assert not torch.equal(*noisy)  # the test can fail: dropout is live before the trainer takes the models
    PPOTrainer(policy, reference, value, tok, lambda p, a: [0.0] * len(a),
               PPOSettings(steps=1, batch_size=2, mini_batch_size=2), seed=0)
    for m in (policy, reference, value):
        m.train()
        assert all(d.p == 0 for d in m.modules() if isinstance(d, torch.nn.Dropout))
        first, second = (m(input_ids=seq).logits for _ in range(2))
        assert torch.equal(first, second)


def test_ppo_logs_entropy_and_the_gold_score_per_update():
    from core.ppo import PPOTrainer, ValueHead
    from core.settings import PPOSettings

    tok, model = tiny_setup()
    policy = model()
    seen = []

    def gold(prompts, answers, refs):
        seen.append(list(refs))
        return [1.0 if ref == "a" else 0.0 for ref in refs]

    settings = PPOSettings(steps=2, batch_size=4, mini_batch_size=2, max_new_tokens=3, value="head")
    trainer = PPOTrainer(policy, model(), ValueHead(policy), tok, lambda p, a: [0.5] * len(a), settings, seed=0,
                         gold_fn=gold)
    prompts = [[{"role": "user", "content": f"Question {i}?"}] for i in range(4)]
    history = trainer.train(prompts, references=["a", "b", "a", "a"])
    assert len(history) == 2 and len(seen) == 2
    for row, refs in zip(history, seen):
        assert row["objective/gold"] == pytest.approx(sum(r == "a" for r in refs) / len(refs))
    # objective/entropy is TRL's: the sampled answers' summed negative log-probability, averaged over answers
    batches = []
    rollout = trainer.rollout
    trainer.rollout = lambda p: batches.append(rollout(p)) or batches[-1]
    row = trainer.step(prompts, 3)
    want = (-batches[0]["logprobs"] * batches[0]["mask"]).sum(1).mean().item()
    assert want > 0 and row["objective/entropy"] == pytest.approx(want)
    assert "objective/gold" not in row  # no references: nothing to judge by
