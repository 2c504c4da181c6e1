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


def test_verifiable_reward_checks_the_answer_label():
    from stages.align import verifiable_reward

    completions = [[{"role": "assistant", "content": "The review is positive."}],
                   [{"role": "assistant", "content": "negative"}],
                   [{"role": "assistant", "content": "positive, I think not"}],
                   "negative"]
    assert verifiable_reward(completions, label=["positive", "positive", "positive", "negative"]) == [1.0, 0.0, 0.0, 1.0]
