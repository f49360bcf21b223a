"""Tests for the PPO primitives in rmexp.ppo against independently written reference formulas and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmexp.ppo import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    compute_rewards,
    exact_div,
    gae,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
)

F64 = torch.float64


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# --------------------------------------------------------------------------------------------------
# exact_div
# --------------------------------------------------------------------------------------------------

def test_exact_div():
    assert exact_div(12, 4, "batch") == 3
    with pytest.raises(ValueError) as e:
        exact_div(10, 3, "rollout_batch_size / num_minibatches")
    msg = str(e.value)
    assert "rollout_batch_size / num_minibatches" in msg and "10" in msg and "3" in msg
    for bad in (0, -2):
        with pytest.raises(ValueError, match=rf"minibatch.*{bad}"):
            exact_div(8, bad, "minibatch")


# --------------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------------

X = [[1.0, 2.0, 4.0, 100.0], [-3.0, 0.5, 7.0, 8.0]]
M = [[1, 1, 1, 0], [1, 1, 0, 0]]


def test_masked_mean_and_var_vs_numpy():
    x, mask = t(X), torch.tensor(M)
    sel = np.array(X)[np.array(M, dtype=bool)]  # [1, 2, 4, -3, 0.5]
    assert masked_mean(x, mask).item() == pytest.approx(sel.mean(), abs=1e-12)
    assert masked_var(x, mask).item() == pytest.approx(sel.var(ddof=1), abs=1e-12)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(sel.var(ddof=0), abs=1e-12)
    np.testing.assert_allclose(masked_mean(x, mask, dim=1).numpy(), [7.0 / 3.0, -1.25])
    np.testing.assert_allclose(masked_mean(x, mask.float(), dim=0).numpy(), [-1.0, 1.25, 4.0, np.nan])


def test_masked_stats_ignore_garbage_in_padding():
    x = t(X)
    x[0, 3] = math.inf
    x[1, 3] = math.nan
    mask = torch.tensor(M, dtype=torch.bool)
    sel = np.array([1.0, 2.0, 4.0, -3.0, 0.5])
    assert masked_mean(x, mask).item() == pytest.approx(sel.mean(), abs=1e-12)
    assert masked_var(x, mask).item() == pytest.approx(sel.var(ddof=1), abs=1e-12)
    assert torch.isfinite(masked_whiten(x, mask)).all()


def test_masked_var_needs_two_entries():
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(t([[1.0, 2.0]]), torch.tensor([[1, 0]]))


def test_masked_whiten_vs_numpy():
    x, mask = t(X), torch.tensor(M)
    mb = np.array(M, dtype=bool)
    sel = np.array(X)[mb]
    mean, var = sel.mean(), sel.var(ddof=1)
    expect = np.zeros((2, 4))
    expect[mb] = (sel - mean) / np.sqrt(var + 1e-8)

    w = masked_whiten(x, mask)
    np.testing.assert_allclose(w.numpy(), expect, atol=1e-12)
    assert (w[~mask.bool()] == 0).all()  # padding is zeroed
    ws = w[mask.bool()]
    assert ws.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert ws.std().item() == pytest.approx(1.0, abs=1e-6)

    w2 = masked_whiten(x, mask, shift_mean=False)
    expect2 = np.zeros((2, 4))
    expect2[mb] = (sel - mean) / np.sqrt(var + 1e-8) + mean
    np.testing.assert_allclose(w2.numpy(), expect2, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# KL penalty and rewards
# --------------------------------------------------------------------------------------------------

def test_kl_kinds_hand_example():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])  # logp - ref = [0.5, -1.0]
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1").numpy(), [0.5, -1.0], atol=1e-12)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k2").numpy(), [0.125, 0.5], atol=1e-12)
    # ref - logp = [-0.5, 1.0]: exp(-0.5) - 1 + 0.5 and exp(1) - 1 - 1
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3").numpy(),
                               [math.exp(-0.5) - 0.5, math.e - 2.0], atol=1e-12)
    np.testing.assert_allclose(kl_penalty(logp, ref, "abs").numpy(), [0.5, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_kl_estimators():
    # Expectation under the policy p of the per-sample estimate equals KL(p || q) exactly.
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    kl = float(np.sum(p * np.log(p / q)))
    for kind in ("k1", "k3"):
        est = kl_penalty(t(np.log(p)), t(np.log(q)), kind).numpy()
        assert float(np.sum(p * est)) == pytest.approx(kl, abs=1e-12)
    assert (kl_penalty(t(np.log(p)), t(np.log(q)), "k3") >= 0).all()


def test_compute_rewards_hand_example():
    # Row 0 has 3 real tokens, row 1 has 1; padding holds junk log-probs.
    logp = t([[-1.0, -0.5, -2.0, -9.0], [-0.3, 5.0, 5.0, 5.0]])
    ref = t([[-1.2, -0.5, -1.0, 0.0], [-0.1, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    score = t([2.0, -1.0])
    rewards, nsr, kl = compute_rewards(score, logp, ref, mask, kl_coef=0.1)
    # k1 on real tokens: row 0: [0.2, 0.0, -1.0]; row 1: [-0.2]
    np.testing.assert_allclose(kl.numpy(), [[0.2, 0.0, -1.0, 0.0], [-0.2, 0.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(nsr.numpy(), [[-0.02, 0.0, 0.1, 0.0], [0.02, 0.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(rewards.numpy(), [[-0.02, 0.0, 2.1, 0.0], [-0.98, 0.0, 0.0, 0.0]], atol=1e-12)

    _, _, kl2 = compute_rewards(score, logp, ref, mask, kl_coef=0.1, kind="k2")
    np.testing.assert_allclose(kl2.numpy(), [[0.02, 0.0, 0.5, 0.0], [0.02, 0.0, 0.0, 0.0]], atol=1e-12)


def test_compute_rewards_rejects_bad_masks():
    z = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"rows \[1\].*no real response token"):
        compute_rewards(t([1.0, 1.0]), z, z, torch.tensor([[1, 1, 0], [0, 0, 0]]), 0.1)
    with pytest.raises(ValueError, match=r"rows \[0\].*right-padded"):
        compute_rewards(t([1.0, 1.0]), z, z, torch.tensor([[0, 1, 1], [1, 0, 0]]), 0.1)


# --------------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------------

def reference_gae(rewards, values, lengths, gamma, lam):
    """Plain-Python GAE, one row at a time, over the real tokens only; padding advantages are 0."""
    advs = []
    for r, v, n in zip(rewards, values, lengths):
        a = [0.0] * len(r)
        running = 0.0
        for i in reversed(range(n)):
            v_next = v[i + 1] if i + 1 < n else 0.0  # the last real token is terminal
            running = r[i] + gamma * v_next - v[i] + gamma * lam * running
            a[i] = running
        advs.append(a)
    return advs


def test_gae_hand_example_gamma_lambda_one():
    # gamma = lam = 1: advantage = reward-to-go - value. rewards [0.1, 1.0], values [0.5, 0.3]:
    # A_1 = 1.0 - 0.3 = 0.7; A_0 = (0.1 + 1.0) - 0.5 = 0.6.
    adv, ret = gae(t([[0.1, 1.0, 0.0]]), t([[0.5, 0.3, 0.9]]), torch.tensor([[1, 1, 0]]), 1.0, 1.0)
    np.testing.assert_allclose(adv.numpy(), [[0.6, 0.7, 0.0]], atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), [[1.1, 1.0, 0.9]], atol=1e-12)


def test_gae_vs_plain_loop_with_ragged_masks():
    rng = np.random.default_rng(0)
    lengths = [5, 3, 1, 4]
    B, T = len(lengths), 5
    rewards = rng.normal(size=(B, T))
    values = rng.normal(size=(B, T))
    mask = np.array([[1] * n + [0] * (T - n) for n in lengths])
    # Junk in the padding must not matter.
    rewards_j = np.where(mask == 1, rewards, 123.0)
    values_j = np.where(mask == 1, values, -77.0)
    gamma, lam = 0.9, 0.8
    adv, ret = gae(t(rewards_j), t(values_j), torch.tensor(mask), gamma, lam)
    expect = np.array(reference_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam))
    np.testing.assert_allclose(adv.numpy(), expect, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), expect + values_j, atol=1e-12)
    assert (adv.numpy()[mask == 0] == 0).all()


# --------------------------------------------------------------------------------------------------
# Clipped losses
# --------------------------------------------------------------------------------------------------

def test_clipped_policy_loss_hand_example():
    # eps = 0.2. Real tokens (ratio, A):
    #   (1.5,  1): -A r = -1.5, -A clip = -1.2 -> max -1.2, clipped
    #   (0.5,  1): -0.5 vs -0.8                -> -0.5, not clipped
    #   (1.1, -2):  2.2 vs  2.2 (inside range) ->  2.2, not clipped
    #   (0.7, -1):  0.7 vs  0.8                ->  0.8, clipped
    # loss = (-1.2 - 0.5 + 2.2 + 0.8) / 4 = 0.325; clipfrac = 2 / 4. Two padded tokens with big values.
    ratios = [[1.5, 0.5, 1.1], [0.7, 3.0, 9.0]]
    adv = t([[1.0, 1.0, -2.0], [-1.0, 5.0, -5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    old = t([[-1.0, -2.0, -0.5], [-3.0, -1.0, -1.0]])
    logp = (old + torch.log(t(ratios))).requires_grad_(True)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(0.325, abs=1e-12)
    assert stats["clipfrac"].item() == pytest.approx(0.5, abs=1e-12)
    real = [1.5, 0.5, 1.1, 0.7]
    assert stats["approx_kl"].item() == pytest.approx(0.5 * np.mean(np.log(real) ** 2), abs=1e-12)
    assert not stats["clipfrac"].requires_grad

    # Clipped tokens carry no gradient; unclipped ones get d/dlogp (-A r) / 4 = -A r / 4.
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[0.0, -0.5 / 4, 2.2 / 4], [0.0, 0.0, 0.0]], atol=1e-12)


def test_clipped_value_loss_hand_example():
    # eps = 0.2, old values 0:
    #   v = 0.5, R = 1: (0.5-1)^2 = 0.25; clip -> 0.2: (0.2-1)^2 = 0.64 -> 0.64, clipped
    #   v = 0.1, R = 0: 0.01 both (inside range)                          -> 0.01
    #   v = -0.5, R = 0: 0.25; clip -> -0.2: 0.04                         -> 0.25, not clipped
    # loss = 0.5 * (0.64 + 0.01 + 0.25) / 3 = 0.15; vf_clipfrac = 1/3. Last column is padding.
    values = t([[0.5, 0.1, -0.5, 50.0]])
    old = t([[0.0, 0.0, 0.0, 0.0]])
    returns = t([[1.0, 0.0, 0.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = clipped_value_loss(values, old, returns, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-12)
    assert stats["vf_clipfrac"].item() == pytest.approx(1 / 3, abs=1e-12)
    assert stats["value_mean"].item() == pytest.approx(0.1 / 3, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------------

def test_losses_have_finite_gradients_despite_padding_junk():
    mask = torch.tensor([[1, 1, 0]])
    logp = t([[-1.0, -0.5, math.inf]]).requires_grad_(True)
    old = t([[-1.1, -0.4, -math.inf]])
    adv = t([[1.0, -1.0, math.nan]])
    loss, _ = clipped_policy_loss(logp, old, adv, mask, 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all() and logp.grad[0, 2] == 0

    v = t([[0.3, 0.1, math.inf]]).requires_grad_(True)
    vloss, _ = clipped_value_loss(v, t([[0.2, 0.2, math.nan]]), t([[1.0, 0.0, -math.inf]]), mask, 0.2)
    vloss.backward()
    assert torch.isfinite(vloss) and torch.isfinite(v.grad).all() and v.grad[0, 2] == 0


def test_adaptive_kl_controller_by_hand():
    c = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    c.update(current_kl=9.0, n_steps=256)  # error 0.5 clipped to 0.2: mult 1 + 0.2 * 256 / 10000 = 1.00512
    assert c.value == pytest.approx(0.2 * 1.00512, rel=1e-12)
    c.update(current_kl=6.6, n_steps=100)  # error 0.1: mult 1.001
    assert c.value == pytest.approx(0.2 * 1.00512 * 1.001, rel=1e-12)
    c.update(current_kl=0.0, n_steps=1000)  # error -1 clipped to -0.2: mult 0.98
    assert c.value == pytest.approx(0.2 * 1.00512 * 1.001 * 0.98, rel=1e-12)
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=100)


def test_fixed_kl_controller():
    c = FixedKLController(0.05)
    c.update(current_kl=100.0, n_steps=1000)
    assert c.value == 0.05
