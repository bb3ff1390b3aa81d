"""GRPO maths on hand-made groups: advantages, reward terms, Gaussian log-prob and KL."""

import math

import pytest
import torch
from torch.distributions import Normal

from synthnet.config import GRPOConfig, RewardConfig
from synthnet.rl.advantage import group_advantages, zero_spread_fraction
from synthnet.rl.grpo import sample_k
from synthnet.rl.policy import GaussianPolicy, StepDist
from synthnet.rl.reward import rollout_reward, step_rewards
from synthnet.targets import parse_spec
from synthnet.tokens import layout

NAN = float("nan")


def test_advantage_is_standardised_per_group():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 14.0]])
    adv = group_advantages(r, std_norm=True, eps=0.0)
    mean = r.mean(1, keepdim=True)
    std = r.std(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(adv, (r - mean) / std)
    torch.testing.assert_close(adv.mean(1), torch.zeros(2), atol=1e-6, rtol=0)


def test_all_equal_rewards_give_zero_advantage_not_nan():
    r = torch.full((3, 8), 0.97)
    for std_norm in (True, False):
        adv = group_advantages(r, std_norm=std_norm)
        assert torch.equal(adv, torch.zeros_like(r))
    assert zero_spread_fraction(r) == 1.0


def test_dr_grpo_drops_std_division():
    r = torch.tensor([[0.0, 1.0, 5.0]])
    torch.testing.assert_close(group_advantages(r, std_norm=False), r - 2.0)


def test_absent_members_are_ignored():
    r = torch.tensor([[1.0, 3.0, NAN], [NAN, NAN, 2.0]])
    adv = group_advantages(r, std_norm=False)
    assert torch.isnan(adv[0, 2]) and torch.isnan(adv[1, 0])
    torch.testing.assert_close(adv[0, :2], torch.tensor([-1.0, 1.0]))
    assert adv[1, 2].item() == 0.0
    assert zero_spread_fraction(r) == 0.5


def test_reward_terms_on_hand_made_rollouts():
    # rollout 0: 0.1 -> 0.8 -> 0.9 (K=2); rollout 1: 0.1 -> 0.9 -> 0.7 -> 0.95 (K=3)
    acc = torch.tensor([[0.1, 0.8, 0.9, NAN], [0.1, 0.9, 0.7, 0.95]])
    cfg = RewardConfig(acc_weight=1.0, gain_weight=0.5, penalty_weight=2.0, step_cost=0.01, ce_weight=0.1, norm_limit=3.0)
    reward, t = rollout_reward(acc, torch.tensor([0.3, 0.2]), torch.tensor([2.0, 4.0]), torch.tensor([2, 3]), cfg)
    torch.testing.assert_close(t["final_acc"], torch.tensor([0.9, 0.95]))
    torch.testing.assert_close(t["gains"], torch.tensor([0.8, 0.8 + 0.25]))
    torch.testing.assert_close(t["regressions"], torch.tensor([0.0, 0.2]))
    torch.testing.assert_close(t["blowup"], torch.tensor([0.0, 1.0]))
    expected0 = 0.9 + 0.5 * 0.8 - 0.02 - 0.03
    expected1 = 0.95 + 0.5 * 1.05 - 2.0 * (0.2 + 1.0) - 0.03 - 0.02
    torch.testing.assert_close(reward, torch.tensor([expected0, expected1]))
    steps = step_rewards(acc)
    torch.testing.assert_close(steps[1], torch.tensor([0.8, -0.2, 0.25]))
    assert torch.isnan(steps[0, 2])


def test_gaussian_log_prob_and_kl_match_closed_form():
    mu, mu_ref, sigma = torch.randn(4, 7), torch.randn(4, 7), 0.3
    a = mu + sigma * torch.randn(4, 7)
    manual_lp = -((a - mu) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(Normal(mu, sigma).log_prob(a), manual_lp)
    kl = torch.distributions.kl_divergence(Normal(mu, sigma), Normal(mu_ref, sigma))
    torch.testing.assert_close(kl, (mu - mu_ref) ** 2 / (2 * sigma**2))


def test_policy_masked_log_prob_and_kl_match_a_hand_computation():
    """GaussianPolicy averages over the spec's valid slots only: padded slots (mask False) may hold anything."""
    spec = parse_spec("mlp:6-3-2")  # hidden tokens carry 6 + 1 + 2 features, output tokens 3 + 1: padding exists
    mask = layout(spec).mask
    assert not mask.all()
    sigma, g = 0.3, torch.Generator().manual_seed(0)
    mu, mu_ref = torch.randn((2, *mask.shape), generator=g), torch.randn((2, *mask.shape), generator=g)
    policy = GaussianPolicy(None, sigma)  # log_prob / kl / sample never call the denoiser
    dist = StepDist(mu, sigma, None)
    action = policy.sample(spec, dist, g)
    assert (action[:, ~mask] == mu[:, ~mask]).all()  # padded slots get no noise
    action[:, ~mask] = 1e6  # and are never read
    for m in range(2):
        lp, kl, n = 0.0, 0.0, 0
        for i, j in mask.nonzero().tolist():
            a, u, r = action[m, i, j].item(), mu[m, i, j].item(), mu_ref[m, i, j].item()
            lp += -(a - u) ** 2 / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
            kl += (u - r) ** 2 / (2 * sigma**2)
            n += 1
        assert policy.log_prob(spec, dist, action)[m].item() == pytest.approx(lp / n, rel=1e-5)
        assert policy.kl(spec, dist, mu_ref)[m].item() == pytest.approx(kl / n, rel=1e-5)


def test_neuron_exploration_moves_each_token_along_its_direction_with_an_exact_log_density():
    """explore=neurons: action - mean is z_n * sigma * u_n per token, and log_prob is the mean over tokens of the
    unit-Normal log-density of z_n, less log sigma; a move orthogonal to every u_n changes nothing."""
    spec = parse_spec("mlp:6-3-2")
    mask = layout(spec).mask
    sigma, g = 0.3, torch.Generator().manual_seed(1)
    mu = torch.randn((2, *mask.shape), generator=g)
    basis = torch.randn((2, *mask.shape), generator=g) * mask
    basis = basis / basis.norm(dim=-1, keepdim=True)
    policy, dist = GaussianPolicy(None, sigma, "neurons"), StepDist(mu, sigma, basis)
    action = policy.sample(spec, dist, g)
    z = ((action - mu) * basis).sum(-1) / sigma  # (2, N)
    torch.testing.assert_close(action - mu, sigma * z[..., None] * basis)
    expected = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).mean(-1) - math.log(sigma)
    torch.testing.assert_close(policy.log_prob(spec, dist, action), expected)
    other = torch.randn(mu.shape, generator=g) * mask
    other = other - (other * basis).sum(-1, keepdim=True) * basis  # orthogonal to each token's direction
    torch.testing.assert_close(policy.log_prob(spec, dist, action + other), expected)


def test_every_rollout_of_a_group_gets_the_same_k():
    g = torch.Generator().manual_seed(0)
    k = sample_k(200, 8, GRPOConfig(k_max=4, k_dist="uniform"), g).view(200, 8)
    assert (k == k[:, :1]).all()
    assert set(k[:, 0].tolist()) == {1, 2, 3, 4}
    assert (sample_k(3, 2, GRPOConfig(k_max=3, k_dist="fixed"), g) == 3).all()
