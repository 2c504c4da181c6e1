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
    assert clipfrac.item() == pytest.approx(1.0)


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
    assert form(completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # a numeric task has no format rule: correctness alone
    rewards = task_rewards(load_task(TaskConfig(name="numeric")))
    assert len(rewards) == 1
    assert rewards[0]([[]] * 2, ["so 1,000 in all", "it is 7"], reference=["x\n#### 1000", "#### 8"]) == [1.0, 0.0]


def test_ppo_step_with_a_value_head_and_a_lora_policy():
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.hf_trainers import LoraSettings
    from core.ppo import PPOSettings, PPOTrainer, ValueHead
    from stages import tokenizer as tokenizer_stage

    tok = tokenizer_stage.build(["The review is positive.", "The review is negative."] * 50,
                                tokenizer_stage.Config(vocab_size=300))
    tok.padding_side = "left"

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64, tie_word_embeddings=True,
                                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))

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
