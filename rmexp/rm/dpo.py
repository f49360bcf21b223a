"""`rm=dpo`: the implicit reward of a policy DPO-trained on the trial's preference rows.

The policy starts from the trial's base; the reference is that same base, frozen. DPO's loss (Rafailov et
al. 2023, eq. 7) is  -log sigmoid(beta * ((log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))))
with sequence log-probabilities summed over the response tokens only; the reward of (x, y) is
beta * (log pi(y|x) - log ref(y|x)), or beta * log pi(y|x) with `rm.reference_free=true` (RewardBench reports
both). `reference_free` changes scoring only, so both variants share one cached policy.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from rmexp.cache import cached
from rmexp.config import config_hash, numerics
from rmexp.rm.base import RMContext, RMKind, base_identity, rows_identity, register_rm_kind
from rmexp.rm.classifier import _orient_by_gold, resolve_device, split_pairs
from rmexp.rm.lm import (Dialogue, budget_batches, encode_dialogue, fit, mean_tail, n_params,
                         sequence_logprobs)
from rmexp.guards import require_finite
from rmexp.rm.options import fail, parse_options

DPO_VERSION = 1  # bump when DPO training changes, so cached policies are retrained


@dataclass
class DPOOptions:
    beta: float
    lr: float
    epochs: int
    batch_size: int
    reference_free: bool

    def check(self) -> None:
        for key in ("beta", "lr", "epochs", "batch_size"):
            if not getattr(self, key) > 0:
                fail(key, getattr(self, key), "it must be > 0")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean DPO loss over pairs of sequence log-probabilities."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * logits).mean()


@torch.no_grad()
def batched_logprobs(model, dialogues: list[Dialogue], pad_id: int, batch_tokens: int = 4096) -> np.ndarray:
    model.eval()
    out = np.empty(len(dialogues), dtype=np.float64)
    for idx in budget_batches([len(d.ids) for d in dialogues], batch_tokens):
        out[idx] = sequence_logprobs(model, [dialogues[i] for i in idx], pad_id).double().cpu().numpy()
    return out


@dataclass
class DPOScorer:
    policy: torch.nn.Module
    reference: torch.nn.Module
    tok: object
    beta: float
    reference_free: bool
    max_length: int
    info: dict
    kind: str = "dpo"

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        dialogues = [encode_dialogue(self.tok, p, r, self.max_length) for p, r in zip(prompts, responses)]
        logp = batched_logprobs(self.policy, dialogues, self.tok.pad_token_id, batch_tokens)
        if not self.reference_free:
            logp = logp - batched_logprobs(self.reference, dialogues, self.tok.pad_token_id, batch_tokens)
        return self.beta * logp

    def describe(self) -> dict:
        return {"kind": self.kind, "params": n_params(self.policy), "metrics": dict(self.info["metrics"]),
                "history": {k: [tuple(x) for x in v] for k, v in self.info["history"].items()}}

    def value_init(self):
        return None  # a causal LM has no value head to start PPO's value model from


def _load_lm(path, cfg):
    return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=cfg.model.trust_remote_code)


def _pairs(tok, rows: list[dict], max_length: int) -> list[tuple[Dialogue, Dialogue]]:
    return [(encode_dialogue(tok, r["prompt"], r["chosen"], max_length),
             encode_dialogue(tok, r["prompt"], r["rejected"], max_length)) for r in rows]


def train_dpo(ctx: RMContext, opts: DPOOptions, out: Path) -> None:
    cfg, t = ctx.cfg, ctx.cfg.train
    torch.manual_seed(t.seed)
    device = resolve_device(cfg.device)
    tok = AutoTokenizer.from_pretrained(str(ctx.base), trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    policy = _load_lm(ctx.base, cfg).to(device)
    reference = _load_lm(ctx.base, cfg).to(device).eval().requires_grad_(False)
    train_rows, eval_rows = split_pairs(ctx.prefs, cfg.data.eval_fraction, cfg.data.seed)
    train_pairs = _pairs(tok, train_rows, t.max_length)
    eval_pairs = _pairs(tok, [_orient_by_gold(r) for r in eval_rows], t.max_length)  # accuracy against the truth
    if not train_pairs:
        raise ValueError(f"rm=dpo: no training pairs (data.size={cfg.data.size}, data.eval_fraction={cfg.data.eval_fraction})")
    # The reference is frozen: its log-probabilities are computed once, not once per epoch.
    flat = [d for pair in train_pairs for d in pair]
    ref = batched_logprobs(reference, flat, tok.pad_token_id).reshape(-1, 2)
    examples = [(c, r, ref[i, 0], ref[i, 1]) for i, (c, r) in enumerate(train_pairs)]

    def loss_fn(batch):
        logp = sequence_logprobs(policy, [c for c, *_ in batch] + [r for _, r, *_ in batch], tok.pad_token_id)
        pc, pr = logp[:len(batch)], logp[len(batch):]
        rc = torch.tensor([x[2] for x in batch], device=logp.device, dtype=logp.dtype)
        rr = torch.tensor([x[3] for x in batch], device=logp.device, dtype=logp.dtype)
        margin = opts.beta * ((pc - rc) - (pr - rr)).detach()
        return dpo_loss(pc, pr, rc, rr, opts.beta), {"train/acc": (margin > 0).float().mean().item(),
                                                     "train/margin": margin.mean().item()}

    start = time.time()
    history = fit(policy, examples, [max(len(c.ids), len(r.ids)) for c, r, *_ in examples], loss_fn, lr=opts.lr,
                  epochs=opts.epochs, batch_size=opts.batch_size, train_cfg=t, progress=ctx.progress, name="dpo train")
    seconds = time.time() - start
    metrics = {"train/loss": mean_tail(history["train/loss"], len(train_pairs) // opts.batch_size // 4),
               "train/n_pairs": float(len(train_pairs)), "train/seconds": seconds, "eval/n": float(len(eval_pairs))}
    if eval_pairs:
        flat_eval = [d for pair in eval_pairs for d in pair]
        logp = batched_logprobs(policy, flat_eval, tok.pad_token_id).reshape(-1, 2)
        logp_ref = batched_logprobs(reference, flat_eval, tok.pad_token_id).reshape(-1, 2)
        implicit = opts.beta * (logp - logp_ref)
        metrics["eval/acc"] = float((implicit[:, 0] > implicit[:, 1]).mean())
        metrics["eval/acc_reference_free"] = float((logp[:, 0] > logp[:, 1]).mean())
        require_finite("rm=dpo held-out rewards", implicit)
    require_finite("rm=dpo training loss", [v for _, v in history["train/loss"]])
    policy.save_pretrained(str(out / "policy"), safe_serialization=True)
    tok.save_pretrained(str(out / "policy"))
    (out / "rmexp_dpo.json").write_text(json.dumps({"metrics": metrics, "history": history}))


def build(ctx: RMContext) -> DPOScorer:
    opts = parse_options(DPOOptions, ctx.cfg.rm, "dpo")
    cfg, t = ctx.cfg, ctx.cfg.train
    # Exactly what determines the trained policy (reference_free is a scoring choice, not a training one).
    key = config_hash(base_identity(ctx.base), rows_identity(ctx.prefs), cfg.data.eval_fraction, cfg.data.seed,
                      opts.beta, opts.lr, opts.epochs, opts.batch_size, t.max_length, t.seed, t.warmup_ratio,
                      t.schedule, t.weight_decay, t.grad_clip, cfg.device, DPO_VERSION, numerics())

    def load(entry: Path) -> DPOScorer:
        device = resolve_device(cfg.device)
        tok = AutoTokenizer.from_pretrained(str(entry / "policy"))
        policy = _load_lm(entry / "policy", cfg).to(device).eval()
        reference = _load_lm(ctx.base, cfg).to(device).eval()
        info = json.loads((entry / "rmexp_dpo.json").read_text())
        return DPOScorer(policy, reference, tok, opts.beta, opts.reference_free, t.max_length, info)

    return cached("rm", key, ctx.cache, lambda out: train_dpo(ctx, opts, out), load, label="dpo")


DPO = register_rm_kind(RMKind("dpo", DPOOptions, build))
