"""PPO for language models (CleanRL / lm-human-preference-details style), written in numbered steps.

The policy is the SFT model, the reference is a frozen copy of it, the reward is the RM score at the end of
the response plus a per-token KL penalty against the reference, and a value head (initialised from the RM)
gives the baseline for GAE. TRL no longer ships a PPO trainer, so the maths lives here and is tested against
reference formulas in tests/test_ppo_math.py.

Conventions for every primitive: tensors are [batch, T] over response tokens only, and `mask` [batch, T]
(float or bool; 1 = real response token) is right-padded, i.e. each row is 1s then 0s. Masked positions may
hold anything (even inf/nan); primitives select with `torch.where` rather than multiplying by the mask, so
padding garbage never leaks into results.
"""

from __future__ import annotations

import torch
from torch import Tensor

# ==================================================================================================
# Primitives (pure tensor functions; tested in tests/test_ppo_math.py)
# ==================================================================================================

KL_KINDS = ("k1", "k2", "k3", "abs")


def exact_div(a: int, b: int, what: str) -> int:
    """a // b, raising ValueError naming `what`, a and b unless b > 0 divides a exactly.

    Used for batch bookkeeping (rollout batch -> minibatches -> micro-batches), where a silent floor would
    drop samples.
    """
    if b <= 0:
        raise ValueError(f"{what}: divisor must be a positive integer, got {b} (dividing {a})")
    if a % b != 0:
        raise ValueError(f"{what}: {a} is not exactly divisible by {b} ({a} / {b} = {a / b:g})")
    return a // b


def _bool_mask(mask: Tensor, like: Tensor) -> Tensor:
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match tensor shape {tuple(like.shape)}")
    return mask.bool()


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over entries where mask is 1 (over all dims, or along `dim`). An all-zero mask gives nan."""
    m = _bool_mask(mask, x)
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / m.sum()
    return total.sum(dim) / m.sum(dim)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over the masked entries (all dims). unbiased: Bessel's correction n / (n - 1)."""
    m = _bool_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        n = int(m.sum())
        if n < 2:
            # As TRL: an unbiased variance of fewer than 2 values divides by zero.
            raise ValueError(f"masked_var: unbiased variance needs at least 2 masked entries, got {n}")
        var = var * (n / (n - 1))
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mean) * rsqrt(var + 1e-8) with mean and (unbiased) var over the masked entries, as TRL's old
    `masked_whiten`; with shift_mean=False the mean is added back (only the scale changes, as for rewards).

    Masked-out entries are set to 0 in the output, so whitened advantages stay 0 on padding.
    """
    m = _bool_mask(mask, x)
    mean, var = masked_mean(x, m), masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros_like(whitened))


def kl_penalty(logprob: Tensor, ref_logprob: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || ref) from the sampled token's log-probs (samples from the policy).

    k1 = logp - ref (unbiased, can be negative); k2 = 0.5 (logp - ref)^2; k3 = exp(ref - logp) - 1 - (ref - logp)
    (Schulman's unbiased, low-variance, always >= 0); abs = |logp - ref|.
    """
    diff = logprob - ref_logprob
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        r = -diff  # log(ref / policy)
        return torch.expm1(r) - r  # expm1 keeps precision when the policy is close to the reference
    if kind == "abs":
        return diff.abs()
    raise ValueError(f"kl_penalty: unknown kind {kind!r}; allowed: {', '.join(KL_KINDS)}")


def _last_token_index(mask: Tensor) -> Tensor:
    """Index of the last real token of each row of a right-padded [B, T] mask; errors on empty or non-right-padded rows."""
    m = mask.bool()
    lengths = m.sum(1)
    if bool((lengths == 0).any()):
        rows = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"mask rows {rows} have no real response token; every response needs at least one")
    if m.shape[1] > 1 and bool((m[:, 1:] & ~m[:, :-1]).any()):
        rows = torch.nonzero((m[:, 1:] & ~m[:, :-1]).any(1)).flatten().tolist()
        raise ValueError(f"mask rows {rows} are not right-padded (expected 1s then 0s)")
    return lengths - 1


def compute_rewards(
    score: Tensor,
    logprob: Tensor,
    ref_logprob: Tensor,
    mask: Tensor,
    kl_coef: float,
    kind: str = "k1",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token rewards: -kl_coef * KL on every real token, plus the scalar RM score at the last real token.

    score: [B]; logprob, ref_logprob, mask: [B, T]. Returns (rewards, non_score_reward, kl), each [B, T] and
    0 on masked positions.
    """
    m = _bool_mask(mask, logprob)
    if score.shape != (logprob.shape[0],):
        raise ValueError(f"compute_rewards: score must have shape [{logprob.shape[0]}], got {tuple(score.shape)}")
    zeros = torch.zeros_like(logprob)
    kl = torch.where(m, kl_penalty(logprob, ref_logprob, kind), zeros)
    non_score_reward = -kl_coef * kl
    last = _last_token_index(m)
    rewards = non_score_reward.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards, non_score_reward, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation, backwards over T. Returns (advantages, returns = advantages + values).

    A real token followed by a masked one (or by the end of the row) is terminal: its next value is 0.
    Advantages are 0 at masked positions (so rewards/values there are ignored); returns there equal `values`,
    which the masked value loss ignores. Pass detached tensors: these are targets, not part of the graph.
    """
    m = _bool_mask(mask, rewards)
    if values.shape != rewards.shape:
        raise ValueError(f"gae: values shape {tuple(values.shape)} != rewards shape {tuple(rewards.shape)}")
    zeros_col = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    last_gae = zeros_col
    adv_rev = []
    for t in reversed(range(T)):
        next_values = torch.where(m[:, t + 1], values[:, t + 1], zeros_col) if t + 1 < T else zeros_col
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = torch.where(m[:, t], delta + gamma * lam * last_gae, zeros_col)
        adv_rev.append(last_gae)
    advantages = torch.stack(adv_rev[::-1], dim=1)
    return advantages, advantages + values


def clipped_policy_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate: masked mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    Stats (detached 0-d tensors, so callers can accumulate without a device sync): `clipfrac` (share of real
    tokens where the clipped term is the active one), `approx_kl` (0.5 * mean (logp - old_logp)^2, as in
    lm-human-preference-details / TRL), `ratio_mean`.
    """
    m = _bool_mask(mask, logprob)
    # Zero padding before exp/multiply: torch.where alone keeps nan/inf out of the value but not out of the
    # backward pass (0 * inf = nan in the gradient of the unselected branch).
    log_ratio = torch.where(m, logprob - old_logprob, torch.zeros_like(logprob))
    advantages = torch.where(m, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(pg_loss1, pg_loss2), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_loss2 > pg_loss1).to(logprob.dtype), m),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_value: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """0.5 * masked mean of max((v - R)^2, (clip(v, old_v - eps, old_v + eps) - R)^2).

    Stats (detached 0-d tensors): `vf_clipfrac` (share of real tokens where the clipped term is larger),
    `value_mean`.
    """
    m = _bool_mask(mask, values)
    zeros = torch.zeros_like(values)
    # As in clipped_policy_loss: keep padding junk out of the backward pass, not only out of the value.
    values, old_values, returns = (torch.where(m, x, zeros) for x in (values, old_values, returns))
    v_clipped = torch.clamp(values, old_values - clip_range_value, old_values + clip_range_value)
    vf_loss1 = (values - returns) ** 2
    vf_loss2 = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(vf_loss1, vf_loss2), m)
    with torch.no_grad():
        stats = {
            "vf_clipfrac": masked_mean((vf_loss2 > vf_loss1).to(values.dtype), m),
            "value_mean": masked_mean(values, m),
        }
    return loss, stats


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): nudges the coefficient so the measured KL tracks `target`.

    update: e = clip(current_kl / target - 1, -0.2, 0.2); value *= 1 + e * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController: target and horizon must be > 0, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """Constant KL coefficient; `update` is a no-op so it is interchangeable with AdaptiveKLController."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


# ==================================================================================================
# Training loop (rollout, score, KL, whiten, GAE, update) -- to be added below, built on the primitives.
# ==================================================================================================
