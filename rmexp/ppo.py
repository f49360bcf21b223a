"""PPO for language models (CleanRL / lm-human-preference-details style), written in numbered steps.

The policy is the SFT model, the reference is a frozen copy of it, the reward is the RM score at the end of the
response plus a per-token KL penalty against the reference, and a value head (initialised from the RM) gives the
baseline for GAE. `downstream.ppo.algorithm=grpo` swaps the value model for GRPO's group-relative advantages
(Shao et al. 2024, DeepSeekMath): `group_size` samples per prompt, each scored, the advantage of a sample is its
score standardised within its group, and the KL to the reference moves from the reward into the loss (estimator
k3, as the paper); every other setting (kl_coef, lr, clip range, batch sizes) is PPO's and was not re-tuned for
GRPO. TRL no longer ships a PPO trainer, so the maths lives here and is tested against reference formulas in
tests/test_ppo_math.py; the training loop (`ppo_stage`, at the bottom) is tested in tests/test_ppo.py. One module of ~700 lines on purpose: the loop's
numbered steps are read against the primitives they call.

Conventions for every primitive: tensors are [batch, T] over response tokens only, and `mask` [batch, T]
(float or bool; 1 = real response token) is right-padded, i.e. each row is 1s then 0s. Masked positions may
hold anything (even inf/nan); primitives select with `torch.where` rather than multiplying by the mask, so
padding garbage never leaks into results.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rmexp import guards
from rmexp.plots import save_figure
from rmexp.sampling import draw_tokens, generate as kv_generate

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


ALGORITHMS = ("ppo", "grpo")
GRPO_EPS = 1e-4  # added to the group's std (as TRL's GRPOTrainer), so a group of equal scores gets advantage 0


def group_advantages(scores: Tensor, group_size: int, eps: float = GRPO_EPS) -> Tensor:
    """GRPO's outcome advantages: (r - mean_group) / (std_group + eps) for each sample, where rows
    [k * group_size, (k + 1) * group_size) are the samples of one prompt. std is the unbiased (Bessel) standard
    deviation over the group, as TRL's GRPOTrainer (`.std(dim=1)`). scores: [B]; returns [B]."""
    if group_size < 2:
        raise ValueError(f"group_advantages: group_size must be >= 2 (a group of 1 has no spread), got {group_size}")
    groups = scores.view(exact_div(scores.shape[0], group_size, "group_advantages: batch / group_size"), group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).view(-1)


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
# Training loop (rollout, score, KL, whiten, GAE, update), built on the primitives
# ==================================================================================================
#
#   ppo_stage: 0. checks and set-up (policy, frozen reference, value model from the RM, optimisers)
#              per step: 1. rollout  2. score  3. KL penalty  4. whiten rewards  5. values + GAE  6. update
#              every `eval_every` steps (and at 0 and the end): evaluation on held-out prompts (gold, proxy, KL)
#
# Sequences are [prompt | response] rows, right-padded, with the prompt length per row (`q_len`). Right padding
# keeps every real position's causal context free of padding, so plain position ids 0..L-1 are right for every
# family (GPT-2's absolute positions included) and no row is ever fully masked (no NaN from all-masked softmax).
# Sampling is our own loop (no KV cache: sequences here are <= ~48 tokens; a real-world run with long responses
# would want one), driven by a CPU torch.Generator, so a run is a pure function of its seed on CPU. The models
# follow the RM's device. The RM scores decoded text (its tokenizer may differ); the value model, a copy of the
# RM, reads the policy's token ids, so their vocabularies must match (checked).
#
# Toy-world tuning of the defaults (PPOConfig): lr 5e-4 / kl_coef 0.1 / 32 prompts a step hacked the RM within
# 10 steps (KL > 4 nats, gold 0.39 -> 0.17 while the proxy rose 0.3 -> 4.0); lr 1e-4, kl_coef 0.2, 64 prompts
# a step, 80 steps raised gold on every seed tried (+0.09..+0.14) and a flipped-label RM lowered it (-0.24).
# WORLD_VERSION 3's RMs are stronger and kl_coef 0.2 over-optimised them (~4 nats of KL); on data seeds 3-8, which no
# study uses, 1.0 gave more gold (+0.105 vs +0.070, paired +0.034 [+0.003, +0.066]) at 0.4 nats: the default since.
# Even PPO against the gold verifier itself gains only ~+0.15 in 40 steps: Math and Factuality need knowledge
# the SFT policy lacks, and RL mostly reshapes Safety, Focus and Ties.

EVAL_SEED = 20_231  # evaluation draws: the same for every PPO seed and every eval step (common random numbers)


# --------------------------------------------------------------------------------------------------
# Helpers of the loop (small, pure where possible; tested in tests/test_ppo.py)
# --------------------------------------------------------------------------------------------------

def truncate_after_eos(response: Tensor, eos_id: int | list[int], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut each response after its first eos: (tokens with pad after the first eos, mask, has_eos).

    The mask keeps every token up to and including the first eos (eos is an action the policy took); rows
    without eos keep all their tokens and get has_eos = False (they ran into max_new_tokens). `eos_id` may be
    several stop ids (eos and a chat template's end-of-turn token, `rmexp.policy.stop_ids`).
    """
    is_eos = torch.isin(response, torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id],
                                               device=response.device))
    eos_before = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0  # an eos strictly before t
    mask = ~eos_before
    return torch.where(mask, response, torch.full_like(response, pad_id)), mask, is_eos.any(dim=1)


def apply_missing_eos_penalty(scores: Tensor, has_eos: Tensor, penalty: float) -> Tensor:
    """score - penalty for completions that never produced eos (as TRL's `missing_eos_penalty`)."""
    return torch.where(has_eos, scores, scores - penalty)


def score_responses(rm, prompts: list[str], responses: list[str], has_eos: Tensor, penalty: float,
                    batch_tokens: int = 4096) -> tuple[Tensor, Tensor]:
    """(reward, proxy): the RM's normalised score of each (prompt, response) text -- read at the last token --
    and that score minus `penalty` where the completion has no eos. The RM re-tokenises the text, so its
    tokenizer may differ from the policy's."""
    proxy = torch.from_numpy(np.asarray(rm.score(prompts, responses, batch_tokens), dtype=np.float32))
    return apply_missing_eos_penalty(proxy, has_eos, penalty), proxy


def check_same_vocab(policy_tok, rm_tok) -> None:
    """The value model is the RM and reads the policy's token ids: the vocabularies must be the same."""
    pv, rv = policy_tok.get_vocab(), rm_tok.get_vocab()
    if pv != rv:
        differ = sum(rv.get(w) != i for w, i in pv.items()) + len(set(rv) - set(pv))
        raise ValueError(
            f"PPO: the reward model's tokenizer ({len(rv)} tokens) does not share the policy's vocabulary "
            f"({len(pv)} tokens; {differ} entries differ). The value model is initialised from the RM and reads "
            f"the policy's token ids, so both must use the same tokenizer: pick downstream.policy.model and "
            f"model from the same tokenizer family.")


def prompt_ids(tok, prompt: str) -> list[int]:
    """Token ids of the chat-formatted prompt, ending where the assistant's response begins."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
    else:
        from rmexp.world.core import chat_text
        text = chat_text(prompt)
    return tok(text, add_special_tokens=False)["input_ids"]


def join_sequences(queries: list[list[int]], response: Tensor, resp_mask: Tensor, pad_id: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """[prompt | response] rows, right-padded to max(q_len) + T: (ids, attention_mask, q_len)."""
    B, T = response.shape
    dev = response.device
    q_len = torch.tensor([len(q) for q in queries], device=dev)
    ids = torch.full((B, int(q_len.max()) + T), pad_id, dtype=torch.long, device=dev)
    attn = torch.zeros_like(ids)
    lengths = resp_mask.sum(1).tolist()
    for i, q in enumerate(queries):
        n = int(lengths[i])
        ids[i, :len(q)] = torch.tensor(q, device=dev)
        ids[i, len(q):len(q) + T] = response[i]
        attn[i, :len(q) + n] = 1
    return ids, attn, q_len


def _response_index(q_len: Tensor, T: int) -> Tensor:
    """[B, T] positions whose outputs predict (logits) / value (hidden state before) response token t."""
    return q_len[:, None] - 1 + torch.arange(T, device=q_len.device)[None, :]


def response_logprobs(model, ids: Tensor, attn: Tensor, q_len: Tensor, response: Tensor,
                      temperature: float) -> Tensor:
    """log pi(response_t | prompt, response_<t) with the sampling temperature applied to the logits: [B, T]."""
    logits = model(input_ids=ids, attention_mask=attn).logits
    idx = _response_index(q_len, response.shape[1])
    sel = logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1])).float() / temperature
    return torch.log_softmax(sel, dim=-1).gather(2, response[..., None]).squeeze(-1)


class ValueModel(torch.nn.Module):
    """V(s_t) from a copy of the RM: its base model's hidden state at every position, through its `score` head,
    minus the RM's normalisation offset (so values are in the units of the normalised reward).

    Before training, the value at the position of the last response token is exactly the RM's score."""

    def __init__(self, rm_model: torch.nn.Module, offset: float) -> None:
        super().__init__()
        self.body = copy.deepcopy(rm_model)
        self.offset = float(offset)

    def token_values(self, ids: Tensor, attn: Tensor) -> Tensor:
        hidden = self.body.base_model(input_ids=ids, attention_mask=attn)[0]
        return self.body.score(hidden).squeeze(-1).float() - self.offset

    def forward(self, ids: Tensor, attn: Tensor, q_len: Tensor, T: int) -> Tensor:
        """[B, T]: the value of the state before each response token (prompt + response_<t)."""
        return self.token_values(ids, attn).gather(1, _response_index(q_len, T))


@torch.no_grad()
def generate(model, queries: list[list[int]], max_new_tokens: int, temperature: float, eos_id: int,
             pad_id: int, generator: torch.Generator) -> Tensor:
    """Sample up to max_new_tokens per prompt (pure sampling at `temperature`): [B, T], pad after eos.

    Prompts of different lengths share one right-padded buffer; row i's next token is read from the logits at
    its own last position. T is max_new_tokens, or fewer when every row has ended. Draws are made on the CPU
    `generator` whatever the model's device, so a seed gives the same stream everywhere.

    The cache-free reference: rollouts use `rmexp.sampling.generate` (KV cache, same draws; tests/test_sampling.py
    checks the two agree token for token)."""
    dev = next(model.parameters()).device
    B = len(queries)
    q_len = torch.tensor([len(q) for q in queries], device=dev)
    width0 = int(q_len.max())
    buf = torch.full((B, width0 + max_new_tokens), pad_id, dtype=torch.long, device=dev)
    for i, q in enumerate(queries):
        buf[i, :len(q)] = torch.tensor(q, device=dev)
    rows = torch.arange(B, device=dev)
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    steps = 0
    for t in range(max_new_tokens):
        width = width0 + t
        attn = (torch.arange(width, device=dev)[None, :] < (q_len + t)[:, None]).long()
        logits = model(input_ids=buf[:, :width], attention_mask=attn).logits[rows, q_len + t - 1].float()
        probs = torch.softmax(logits / temperature, dim=-1)
        u = torch.rand(B, dtype=torch.float64, generator=generator)  # the draws of rmexp.sampling.generate
        nxt = draw_tokens(probs.cpu(), u).to(dev)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, t] = nxt
        buf[rows, q_len + t] = nxt
        done |= nxt == eos_id
        steps = t + 1
        if bool(done.all()):
            break
    return out[:, :steps]


@dataclass
class Rollout:
    """One batch of prompts with sampled responses and everything the update needs (no gradients)."""
    ids: Tensor          # [B, L] prompt + response, right-padded
    attn: Tensor         # [B, L]
    q_len: Tensor        # [B]
    response: Tensor     # [B, T] pad after the first eos
    mask: Tensor         # [B, T] bool: real response tokens (up to and including the first eos)
    has_eos: Tensor      # [B] bool
    texts: list[str]     # decoded responses (special tokens dropped)
    logprob: Tensor      # [B, T] policy, temperature-scaled
    ref_logprob: Tensor  # [B, T] reference, temperature-scaled


@torch.no_grad()
def rollout(policy, ref, tok, prompts: list[str], temperature: float, max_new_tokens: int,
            generator: torch.Generator, chunk: int = 64) -> Rollout:
    """Step 1: sample responses, cut them after the first eos (or the template's end-of-turn token), recompute
    policy and reference log-probs."""
    from rmexp.policy import stop_ids

    stops = stop_ids(tok, policy.generation_config)  # toy policies: eos alone
    parts = []
    for s in range(0, len(prompts), chunk):
        queries = [prompt_ids(tok, p) for p in prompts[s:s + chunk]]
        raw = kv_generate(policy, queries, max_new_tokens, temperature, stops, tok.pad_token_id, generator)
        response, mask, has_eos = truncate_after_eos(raw, stops, tok.pad_token_id)
        ids, attn, q_len = join_sequences(queries, response, mask, tok.pad_token_id)
        parts.append((ids, attn, q_len, response, mask, has_eos))
    T = max(p[3].shape[1] for p in parts)
    L = max(p[0].shape[1] for p in parts)

    def cat(i: int, width: int, fill) -> Tensor:
        return torch.cat([F.pad(p[i], (0, width - p[i].shape[1]), value=fill) for p in parts])

    ids, attn, response = cat(0, L, tok.pad_token_id), cat(1, L, 0), cat(3, T, tok.pad_token_id)
    mask, q_len, has_eos = cat(4, T, False), torch.cat([p[2] for p in parts]), torch.cat([p[5] for p in parts])
    texts = [t.strip() for t in tok.batch_decode(response.cpu(), skip_special_tokens=True)]
    logprob = response_logprobs(policy, ids, attn, q_len, response, temperature)
    ref_logprob = response_logprobs(ref, ids, attn, q_len, response, temperature)
    return Rollout(ids, attn, q_len, response, mask, has_eos, texts, logprob, ref_logprob)


def _trim(r: Rollout, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """Rows `idx` of a rollout, cut to the widths they need: (ids, attn, q_len, response, mask, T)."""
    q_len, mask = r.q_len[idx], r.mask[idx]
    T = int(mask.sum(1).max())
    L = int(q_len.max()) + T
    return r.ids[idx, :L], r.attn[idx, :L], q_len, r.response[idx, :T], mask[:, :T], T


# --------------------------------------------------------------------------------------------------
# Evaluation: one sample per held-out prompt from the current policy (fixed draws), gold / proxy / KL
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(policy, ref, tok, rm, gold_src, prompts, temperature: float, max_new_tokens: int,
             batch_tokens: int = 4096) -> dict:
    """One sample per prompt (the EVAL_SEED draws): gold by `gold_src.gold` (rmexp.gold, or a World), proxy by `rm`,
    KL to `ref`, per domain and per row."""
    gen = torch.Generator().manual_seed(EVAL_SEED)
    r = rollout(policy, ref, tok, [p.text for p in prompts], temperature, max_new_tokens, gen)
    gold = np.array([gold_src.gold(p, t) for p, t in zip(prompts, r.texts)])
    proxy = rm.score([p.text for p in prompts], r.texts, batch_tokens)
    kl = torch.where(r.mask, r.logprob - r.ref_logprob, torch.zeros_like(r.logprob)).sum(1).double().cpu().numpy()
    domains = [p.domain for p in prompts]
    per_domain = {d: float(np.mean([g for g, dd in zip(gold, domains) if dd == d]))
                  for d in dict.fromkeys(domains)}
    rows = [{"prompt": p.text, "domain": p.domain, "response": t, "gold": float(g), "proxy": float(x),
             "kl": float(k), "has_eos": bool(e)}
            for p, t, g, x, k, e in zip(prompts, r.texts, gold, proxy, kl, r.has_eos.cpu().tolist())]
    return {"gold": float(gold.mean()), "proxy": float(proxy.mean()), "kl": float(kl.mean()),
            "missing_eos": float((~r.has_eos).float().mean().cpu()), "domains": per_domain, "rows": rows}


def plot_ppo_curve(history: dict[str, list[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """Gold and proxy (left) and KL to the reference (right) against the PPO step. Over-optimisation shows as
    gold falling while proxy keeps rising."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_kl) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    steps = [s for s, _ in history["ppo/gold"]]
    ax.plot(steps, [v for _, v in history["ppo/gold"]], "o-", color="tab:green", label="gold (verifier)")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("gold score", color="tab:green")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, [v for _, v in history["ppo/proxy"]], "s--", color="tab:purple", label="proxy (RM)")
    ax2.set_ylabel("proxy reward (normalised RM score)", color="tab:purple")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], loc="best", fontsize="small")
    ax.set_title("held-out gold and proxy")
    ax_kl.plot(steps, [v for _, v in history["ppo/kl"]], "o-", color="tab:red")
    ax_kl.set_xlabel("PPO step")
    ax_kl.set_ylabel("KL(policy || SFT), nats per response")
    ax_kl.grid(True, alpha=0.3)
    ax_kl.set_title("KL to the reference")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------

def _value_init(rm) -> tuple[torch.nn.Module, float] | None:
    """(model, offset) to initialise the value model from: the scorer's `value_init()` (None for kinds without a
    value head)."""
    vi = rm.value_init()
    return None if vi is None else (vi.model, vi.offset)


def ppo_stage(cfg, world, rm, cache, out_dir, show_bars: bool = True, title: str | None = None, gold=None
              ) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]], list[Path]]:
    """Train the SFT policy `cfg.downstream.policy.model` against `rm` with PPO (or GRPO, by
    `downstream.ppo.algorithm`); measure gold, proxy and KL on held-out prompts.

    `rm` is anything with `score(prompts, responses, batch_tokens)` and `tok`; PPO also needs its value model
    initialisation (`value_init()`), GRPO none. Train and eval prompts and the gold checker come from `gold`
    (`rmexp.gold`; None: the one `cfg.task` names). Returns (metrics, history, artifacts) as the trial expects."""
    from rmexp.gold import gold_source
    from rmexp import zoo
    from rmexp.progress import progress_bar
    from rmexp.rm import resolve_device

    start = time.time()
    p, pol = cfg.downstream.ppo, cfg.downstream.policy
    out_dir = Path(out_dir)
    # 0. Checks before any work, then set-up.
    n_minibatches = exact_div(p.rollout_batch, p.minibatch, "downstream.ppo.rollout_batch / downstream.ppo.minibatch")
    if p.algorithm not in ALGORITHMS:
        raise ValueError(f"downstream.ppo.algorithm={p.algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    grpo = p.algorithm == "grpo"
    kl_kind = p.kl_kind or ("k3" if grpo else "k1")  # null: the algorithm's own estimator
    if kl_kind not in KL_KINDS:
        raise ValueError(f"downstream.ppo.kl_kind={p.kl_kind!r}; allowed: {', '.join(KL_KINDS)}")
    if grpo:
        if kl_kind == "k1":
            raise ValueError("downstream.ppo.kl_kind='k1' with algorithm=grpo: GRPO puts the KL in the loss, where k1 "
                             "(log-ratio of the policy's own samples) has zero expected gradient; use k3 (the GRPO "
                             "paper's) or k2, or null for k3")
        if p.group_size < 2:
            raise ValueError(f"downstream.ppo.group_size={p.group_size}: GRPO needs at least 2 samples per prompt")
        n_prompts = exact_div(p.rollout_batch, p.group_size, "downstream.ppo.rollout_batch / downstream.ppo.group_size")
    else:
        n_prompts = p.rollout_batch
    vi = None if grpo else _value_init(rm)
    if not grpo and vi is None:
        raise ValueError(f"PPO: rm={rm.kind} offers no value-model initialisation; "
                         f"use downstream.ppo.algorithm=grpo (no value model) or an RM kind with one (classifier)")
    gold = gold if gold is not None else gold_source(cfg, world)
    train_prompts = gold.train_prompts()
    if train_prompts is None:
        raise ValueError(f"PPO: task={gold.name} has no train prompts: set task.train_path")
    torch.manual_seed(p.seed)
    path, pcfg = zoo.policy_path(pol, world, cache, show_bars)
    policy, tok = zoo.load_causal_lm(path, trust_remote_code=bool(pcfg.trust_remote_code))
    if vi is not None:  # the value model reads the policy's token ids; a reward from text does not
        check_same_vocab(tok, rm.tok)
    if tok.eos_token_id is None or tok.pad_token_id is None:
        raise ValueError(f"PPO: the policy's tokenizer ({path}) needs an eos and a pad token")
    # The trial put the RM where cfg.device says; PPO follows it (GRPO has no RM weights to follow: cfg.device).
    device = next(vi[0].parameters()).device if vi is not None else resolve_device(cfg.device)
    policy.to(device)
    ref = copy.deepcopy(policy).requires_grad_(False)
    value_model = ValueModel(*vi) if vi is not None else None
    trained = [m for m in (policy, value_model) if m is not None]
    # Dropout off everywhere (as TRL): log-probs of the rollout and of the update must come from one function.
    for m in (policy, ref, *trained[1:]):
        m.eval()
    opt_policy = torch.optim.AdamW(policy.parameters(), lr=p.lr, eps=1e-5, weight_decay=0.0)
    opt_value = (torch.optim.AdamW(value_model.parameters(), lr=p.value_lr, eps=1e-5, weight_decay=0.0)
                 if value_model is not None else None)
    kl_ctl = (AdaptiveKLController(p.kl_coef, p.kl_target, p.kl_horizon) if p.adaptive_kl
              else FixedKLController(p.kl_coef))
    gen = torch.Generator().manual_seed(p.seed)
    prompt_rng = random.Random(f"ppo-prompts-{p.seed}")
    domains = list(train_prompts)
    eval_prompts = gold.prompts(p.eval_prompts_per_domain)
    budget = cfg.benchmark.score_batch_tokens

    history: dict[str, list[tuple[int, float]]] = {k: [] for k in (
        "ppo/gold", "ppo/proxy", "ppo/kl", "ppo/train_reward", "ppo/policy_loss", "ppo/value_loss",
        "ppo/clipfrac", "ppo/kl_coef", "ppo/train_kl", "ppo/approx_kl", "ppo/train_missing_eos",
        "ppo/train_response_len")}
    if grpo:
        del history["ppo/value_loss"]
    evals: dict[int, dict] = {}

    def run_eval(step: int) -> dict:
        ev = evaluate(policy, ref, tok, rm, gold, eval_prompts, pol.temperature, pol.max_new_tokens, budget)
        for k in ("gold", "proxy", "kl"):
            history[f"ppo/{k}"].append((step, ev[k]))
        evals[step] = ev
        return ev

    sft = run_eval(0)
    drawn = 0
    bar = progress_bar(range(1, p.steps + 1), f"{p.algorithm} {pol.model}", show_bars)
    for step in bar:
        # 1. Rollout: balanced over the six domains, prompts drawn from the train split (GRPO: each prompt
        #    `group_size` times in a row, one group per prompt).
        batch = []
        for _ in range(n_prompts):
            q = prompt_rng.choice(train_prompts[domains[drawn % len(domains)]])
            batch.extend([q] * (p.group_size if grpo else 1))
            drawn += 1
        r = rollout(policy, ref, tok, [q.text for q in batch], pol.temperature, pol.max_new_tokens, gen)
        # 2. Score: normalised RM reward at the last token, minus the penalty where eos never came.
        scores, _ = score_responses(rm, [q.text for q in batch], r.texts, r.has_eos.cpu(), p.missing_eos_penalty,
                                    budget)
        scores = scores.to(device)
        kl_coef = kl_ctl.value
        if grpo:
            # 3-5 (GRPO). The score's group-relative advantage on every real token of the sample; the KL is a
            # loss term (below), not a reward.
            kl = torch.where(r.mask, kl_penalty(r.logprob, r.ref_logprob, kl_kind), torch.zeros_like(r.logprob))
            advantages = torch.where(r.mask, group_advantages(scores, p.group_size)[:, None].expand_as(r.logprob),
                                     torch.zeros_like(r.logprob))
            values = returns = None
        else:
            # 3. KL penalty per token against the reference; the score lands on the last real token.
            rewards, _, kl = compute_rewards(scores, r.logprob, r.ref_logprob, r.mask, kl_coef, kl_kind)
            # 4. Optional reward whitening (scale only: the mean is kept).
            if p.whiten_rewards:
                rewards = masked_whiten(rewards, r.mask, shift_mean=False)
            # 5. Values of the rollout's states, GAE, advantage whitening.
            with torch.no_grad():
                values = value_model(r.ids, r.attn, r.q_len, r.response.shape[1])
            advantages, returns = gae(rewards, values, r.mask, p.gamma, p.lam)
            advantages = masked_whiten(advantages, r.mask)
        # 6. PPO epochs over shuffled minibatches: clipped policy loss, plus the clipped value loss (PPO, separate
        #    optimisers) or kl_coef * the per-token KL to the reference (GRPO).
        stats: dict[str, list[float]] = {"policy_loss": [], "clipfrac": [], "approx_kl": []}
        if not grpo:
            stats["value_loss"] = []
        for _epoch in range(p.ppo_epochs):
            order = torch.randperm(p.rollout_batch, generator=gen).view(n_minibatches, p.minibatch)
            for idx in order.to(device):
                ids, attn, q_len, response, mask, T = _trim(r, idx)
                new_logprob = response_logprobs(policy, ids, attn, q_len, response, pol.temperature)
                pg_loss, pg_stats = clipped_policy_loss(new_logprob, r.logprob[idx, :T], advantages[idx, :T],
                                                        mask, p.clip_range)
                if grpo:
                    kl_term = masked_mean(kl_penalty(new_logprob, r.ref_logprob[idx, :T], kl_kind), mask)
                    loss = pg_loss + kl_coef * kl_term
                else:
                    new_values = value_model(ids, attn, q_len, T)
                    vf_loss, _ = clipped_value_loss(new_values, values[idx, :T], returns[idx, :T], mask,
                                                    p.clip_range_value)
                    loss = pg_loss + p.vf_coef * vf_loss
                    stats["value_loss"].append(vf_loss.item())
                guards.check_finite("PPO loss", loss.item(), step - 1, p.steps, {
                    f"downstream.ppo.{k}": p[k] for k in ("lr", "value_lr", "kl_coef", "vf_coef", "clip_range")})
                opt_policy.zero_grad(set_to_none=True)
                if opt_value is not None:
                    opt_value.zero_grad(set_to_none=True)
                loss.backward()
                for m in trained:
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt_policy.step()
                if opt_value is not None:
                    opt_value.step()
                stats["policy_loss"].append(pg_loss.item())
                stats["clipfrac"].append(float(pg_stats["clipfrac"]))
                stats["approx_kl"].append(float(pg_stats["approx_kl"]))
        mean_kl = float(kl.sum(1).mean())
        kl_ctl.update(mean_kl, p.rollout_batch)
        record = {"train_reward": float(scores.mean()), "kl_coef": kl_coef, "train_kl": mean_kl,
                  "train_missing_eos": float((~r.has_eos).float().mean()),
                  "train_response_len": float(r.mask.sum(1).float().mean()),
                  **{k: float(np.mean(v)) for k, v in stats.items()}}
        for k, v in record.items():
            history[f"ppo/{k}"].append((step, v))
        if step % p.eval_every == 0 or step == p.steps:
            ev = run_eval(step)
            bar.set_postfix(gold=f"{ev['gold']:.3f}", proxy=f"{ev['proxy']:.2f}", kl=f"{ev['kl']:.2f}", refresh=False)
    bar.close()

    final = evals[max(evals)]
    metrics = {"ppo/gold": final["gold"], "ppo/gold_delta": final["gold"] - sft["gold"], "ppo/proxy": final["proxy"],
               "ppo/proxy_delta": final["proxy"] - sft["proxy"], "ppo/kl": final["kl"],
               "ppo/missing_eos": final["missing_eos"], "ppo/sft_gold": sft["gold"], "ppo/sft_proxy": sft["proxy"],
               "ppo/train_reward": history["ppo/train_reward"][-1][1] if history["ppo/train_reward"] else float("nan")}
    for d, g in final["domains"].items():
        metrics[f"ppo/{d}/gold"] = g
        metrics[f"ppo/{d}/gold_delta"] = g - sft["domains"][d]
    metrics["ppo/seconds"] = time.time() - start
    samples = out_dir / "ppo_samples.jsonl"
    with open(samples, "w") as f:
        for row in final["rows"]:
            f.write(json.dumps({**row, "step": max(evals)}) + "\n")
    if title is None:
        noise = f", label noise {cfg.data.label_noise:g}" if cfg.data.label_noise else ""
        title = f"{p.algorithm.upper()}: policy {pol.model}, RM {cfg.model.name}{noise}"
    curve = plot_ppo_curve(history, out_dir / "ppo_curve.png", title)
    return metrics, history, [curve, samples]
