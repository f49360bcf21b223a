"""`dpo`: DPO-train the SFT policy on the trial's preference pairs (no RM) and measure it like `ppo/*`.

Direct Preference Optimization (Rafailov et al. 2023, eq. 7):

    L = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

with log pi(y|x) the summed log-probability of the response tokens (its eos included) after the chat-formatted
prompt, pi_ref the frozen SFT policy (`downstream.policy.model`), y_w the pair's chosen and y_l its rejected
response. It trains on the same pairs the RM trains on (the trial's rows minus the RM's held-out prompts,
`rmexp.rm.split_pairs`), so label noise reaches both routes alike.

Measured as PPO: one sample per held-out prompt (`downstream.ppo.eval_prompts_per_domain`, the draws of
`rmexp.ppo.EVAL_SEED`), scored by the gold checker of `task` (the world's verifier, or a real task's) -- `dpo/gold`,
`dpo/gold_delta` (over the SFT policy on the same draws), `dpo/kl` (summed log-ratio to the SFT policy per response) and per-domain gold.

How the analysis treats it: `uses_rm=False` -- DPO never sees the RM, so correlating an RM's benchmark score with
`dpo/*` across trials would only echo what the data did to both; it is left out of the RM-vs-downstream pairs.
Unlike rlvr it does depend on the data (its cache key holds the training rows), so in a sweep over data it is a
line per data setting, and studies compare it with `ppo/*` within a trial or along the data axis. A sweep over RM
kinds or RM training settings on one data set computes it once (the key holds no RM setting).
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rmexp.cache import cached
from rmexp.config import config_hash, numerics
from rmexp.downstream import DownstreamContext, DownstreamMethod, StageOutput, register_downstream
from rmexp.downstream.rlvr import VerifierScorer, read_stage, write_stage
from rmexp.guards import require_finite
from rmexp.policy import policy_identity
from rmexp.rm.base import rows_identity
from rmexp.world.core import WORLD_VERSION

DPO_VERSION = 1  # bump when DPO training or its evaluation changes, so cached results are recomputed


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss (mean over pairs) and the implicit rewards beta * (log pi - log pi_ref) of chosen and
    rejected. Inputs are summed response log-probs, [B] each."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


def encode_responses(tok, prompts: list[str], responses: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids ending where the assistant's turn begins, response ids ending in eos) for each pair."""
    from rmexp.ppo import prompt_ids

    queries = [prompt_ids(tok, p) for p in prompts]
    answers = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
    return queries, answers


def sequence_logprobs(model, queries: list[list[int]], answers: list[list[int]], pad_id: int) -> Tensor:
    """sum_t log pi(answer_t | query, answer_<t) for each row, [B] (temperature 1)."""
    from rmexp.ppo import join_sequences, response_logprobs

    dev = next(model.parameters()).device
    T = max(map(len, answers))
    response = torch.full((len(answers), T), pad_id, dtype=torch.long, device=dev)
    mask = torch.zeros((len(answers), T), dtype=torch.bool, device=dev)
    for i, a in enumerate(answers):
        response[i, :len(a)] = torch.tensor(a, device=dev)
        mask[i, :len(a)] = True
    ids, attn, q_len = join_sequences(queries, response, mask, pad_id)
    logp = response_logprobs(model, ids, attn, q_len, response, 1.0)
    return torch.where(mask, logp, torch.zeros_like(logp)).sum(1)


def _pair_logprobs(model, pairs: list[tuple], pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed log-probs of chosen and rejected for (query, chosen ids, rejected ids) pairs, in one forward."""
    queries = [q for q, _, _ in pairs] * 2
    answers = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    out = sequence_logprobs(model, queries, answers, pad_id)
    return out[:len(pairs)], out[len(pairs):]


def train_dpo(policy, ref, tok, rows: list[dict], d, progress: bool
              ) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """DPO on `rows` ({prompt, chosen, rejected}) with options `d` (downstream.dpo); trains `policy` in place."""
    from rmexp.progress import progress_bar

    queries, chosen = encode_responses(tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows])
    _, rejected = encode_responses(tok, [r["prompt"] for r in rows], [r["rejected"] for r in rows])
    pairs = list(zip(queries, chosen, rejected))
    with torch.no_grad():  # the reference never changes: its log-probs once, up front
        refs = [_pair_logprobs(ref, pairs[i:i + d.batch_size], tok.pad_token_id)
                for i in range(0, len(pairs), d.batch_size)]
    ref_c, ref_r = torch.cat([c for c, _ in refs]), torch.cat([r for _, r in refs])
    opt = torch.optim.AdamW(policy.parameters(), lr=d.lr, weight_decay=0.0)
    rng = random.Random(f"dpo-batches-{d.seed}")
    history: dict[str, list[tuple[int, float]]] = {"dpo/loss": [], "dpo/reward_acc": [], "dpo/reward_margin": []}
    steps_per_epoch = math.ceil(len(pairs) / d.batch_size)
    bar = progress_bar(None, "dpo", progress, total=steps_per_epoch * d.epochs)
    step = 0
    for _epoch in range(d.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for s in range(0, len(order), d.batch_size):
            idx = order[s:s + d.batch_size]
            pc, pr = _pair_logprobs(policy, [pairs[i] for i in idx], tok.pad_token_id)
            loss, rc, rr = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], d.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            step += 1
            history["dpo/loss"].append((step, loss.item()))
            history["dpo/reward_acc"].append((step, (rc > rr).float().mean().item()))
            history["dpo/reward_margin"].append((step, (rc - rr).mean().item()))
            bar.update(1)
    bar.close()
    tail = max(1, steps_per_epoch // 4)  # the last quarter epoch: a steadier number than the last step
    return {"dpo/train_loss": float(np.mean([v for _, v in history["dpo/loss"][-tail:]])),
            "dpo/train_reward_acc": float(np.mean([v for _, v in history["dpo/reward_acc"][-tail:]])),
            "dpo/n_pairs": float(len(pairs)), "dpo/steps": float(step)}, history


def training_rows(cfg, prefs: list[dict]) -> list[dict]:
    """The RM's training pairs (its held-out prompts removed), capped at downstream.dpo.max_pairs."""
    from rmexp.rm import split_pairs

    rows, _ = split_pairs(prefs, cfg.data.eval_fraction, cfg.data.seed)
    cap = cfg.downstream.dpo.max_pairs
    return rows if cap is None else rows[:cap]


def dpo_key(cfg, policy_dir: Path, rows: list[dict], world_seed: int, gold=None) -> str:
    """What determines the result: policy weights and sampling, the training rows, DPO options, evaluation
    prompts (the world, or a real task's items: `gold`), world and device (no RM setting)."""
    from omegaconf import OmegaConf

    d = {k: v for k, v in OmegaConf.to_container(cfg.downstream.dpo, resolve=True).items() if k != "enabled"}
    pol = {k: v for k, v in OmegaConf.to_container(cfg.downstream.policy, resolve=True).items() if k != "model"}
    task = [] if gold is None or gold.name == "toy" else gold.identity()
    return config_hash(policy_identity(policy_dir), pol, rows_identity(rows), d,
                       cfg.downstream.ppo.eval_prompts_per_domain, world_seed, WORLD_VERSION, cfg.device, DPO_VERSION,
                       numerics(), *task)


def _write_samples(path: Path, rows: list[dict]) -> None:
    import json

    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k != "proxy"}) + "\n")


def run(ctx: DownstreamContext) -> StageOutput:
    from rmexp import zoo
    from rmexp.ppo import evaluate
    from rmexp.rm import resolve_device

    cfg = ctx.cfg
    if not ctx.prefs:
        raise ValueError("dpo: the trial passed no preference rows (DownstreamContext.prefs); DPO trains on them")
    pol = cfg.downstream.policy
    policy_dir, pcfg = zoo.policy_path(pol, ctx.world, ctx.cache, ctx.progress)
    gold = ctx.gold_source()
    trust = bool(pcfg.trust_remote_code)
    rows = training_rows(cfg, ctx.prefs)
    if not rows:
        raise ValueError(f"dpo: no training pairs left after the RM's held-out split (data.size={cfg.data.size})")

    def build(tmp: Path) -> None:
        start = time.time()
        torch.manual_seed(cfg.downstream.dpo.seed)
        policy, tok = zoo.load_causal_lm(policy_dir, trust_remote_code=trust)
        ref, _ = zoo.load_causal_lm(policy_dir, trust_remote_code=trust)
        device = resolve_device(cfg.device)
        policy.to(device).eval()  # dropout off, as in PPO: the log-probs of training and evaluation agree
        ref.to(device).eval().requires_grad_(False)
        verifier = VerifierScorer(gold, tok)
        prompts = gold.prompts(cfg.downstream.ppo.eval_prompts_per_domain)
        budget = cfg.benchmark.score_batch_tokens

        def measure(model) -> dict:
            return evaluate(model, ref, tok, verifier, gold, prompts, pol.temperature, pol.max_new_tokens, budget)

        sft = measure(ref)
        metrics, history = train_dpo(policy, ref, tok, rows, cfg.downstream.dpo, ctx.progress)
        final = measure(policy)
        metrics |= {"dpo/gold": final["gold"], "dpo/gold_delta": final["gold"] - sft["gold"], "dpo/kl": final["kl"],
                    "dpo/sft_gold": sft["gold"], "dpo/missing_eos": final["missing_eos"]}
        for dom, g in final["domains"].items():
            metrics[f"dpo/{dom}/gold"] = g
            metrics[f"dpo/{dom}/gold_delta"] = g - sft["domains"][dom]
        metrics["dpo/seconds"] = time.time() - start
        require_finite("dpo", metrics)
        _write_samples(tmp / "samples.jsonl", final["rows"])
        write_stage(tmp, metrics, history)

    return cached("dpo", dpo_key(cfg, policy_dir, rows, ctx.world.seed, gold), ctx.cache, build,
                  lambda entry: read_stage(entry, Path(ctx.out_dir), "dpo"), label=pol.model)


DPO = register_downstream(DownstreamMethod(name="dpo", uses_rm=False, outcomes=("gold", "gold_delta"), run=run))
