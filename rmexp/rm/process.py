"""`rm=orm` and `rm=prm`: reward models that score every token (outcome RM) or every reasoning step (process RM).

Both put the sequence-classification score head on every token of a dialogue and train it with binary
cross-entropy:
  * ORM: every response token of a response is trained towards its outcome label (chosen 1, rejected 0 with
    `rm.labels=preference`, the verifier's gold score with `rm.labels=gold`); the sequence score is the
    last token's logit (Cobbe et al. 2021; Uesato et al. 2022).
  * PRM: the token that ends each step is trained towards that step's label; the training data are the toy
    world's step-labelled Math solutions (rmexp/world/steps.py). A response's steps are scored
    (sigmoid of the logit at each step end) and combined by `rm.aggregate`: min or prod (Lightman et al.
    2023). Responses that are not step-by-step solutions (other domains) are one step.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmexp.cache import cached
from rmexp.config import config_hash, numerics
from rmexp.rm.base import RMContext, RMKind, base_identity, rows_identity, ValueInit, register_rm_kind
from rmexp.rm.classifier import _orient_by_gold, resolve_device, split_pairs
from rmexp.rm.lm import (Dialogue, budget_batches, encode_dialogue, fit, heldout_pair_accuracy,
                         mean_tail, n_params, token_logits)
from rmexp.guards import require_finite
from rmexp.rm.options import fail, parse_options
from rmexp.world.core import WORLD_VERSION
from rmexp.world.steps import split_steps, step_ends, step_solutions

PROCESS_VERSION = 1  # bump when ORM/PRM training changes, so cached models are retrained
PRM_EVAL_SOLUTIONS = 200  # held-out step-labelled solutions for eval/step_acc


@dataclass
class ORMOptions:
    lr: float
    epochs: int
    batch_size: int
    labels: str

    def check(self) -> None:
        _check_training(self)
        if self.labels not in ("preference", "gold"):
            fail("labels", self.labels, "choose one of ['preference', 'gold']")


@dataclass
class PRMOptions:
    lr: float
    epochs: int
    batch_size: int
    n_solutions: int
    wrong_rate: float
    aggregate: str

    def check(self) -> None:
        _check_training(self)
        if not self.n_solutions > 0:
            fail("n_solutions", self.n_solutions, "it must be > 0")
        if not 0 <= self.wrong_rate <= 1:
            fail("wrong_rate", self.wrong_rate, "it must be between 0 and 1")
        if self.aggregate not in ("min", "prod"):
            fail("aggregate", self.aggregate, "choose one of ['min', 'prod']")


def _check_training(opts) -> None:
    for key in ("lr", "epochs", "batch_size"):
        if not getattr(opts, key) > 0:
            fail(key, getattr(opts, key), "it must be > 0")


def aggregate_steps(step_probs: np.ndarray, how: str) -> float:
    """A response's score from its steps' probabilities of being right."""
    return float(step_probs.min() if how == "min" else step_probs.prod())


# An example: a dialogue, the token positions trained, and their targets.
Example = tuple[Dialogue, list[int], list[float]]


def token_bce(model, batch: list[Example], pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
    logits, _ = token_logits(model, [d for d, _, _ in batch], pad_id)
    rows = torch.cat([torch.full((len(pos),), i) for i, (_, pos, _) in enumerate(batch)])
    cols = torch.cat([torch.tensor(pos) for _, pos, _ in batch])
    target = torch.cat([torch.tensor(y, dtype=torch.float32) for _, _, y in batch]).to(logits.device)
    picked = logits[rows.to(logits.device), cols.to(logits.device)]
    loss = F.binary_cross_entropy_with_logits(picked, target)
    return loss, {"train/acc": ((picked > 0) == (target > 0.5)).float().mean().item()}


@dataclass
class TokenHeadScorer:
    model: torch.nn.Module
    tok: object
    max_length: int
    info: dict
    kind: str
    aggregate: str | None = None  # PRM only

    @torch.no_grad()
    def logits_at(self, dialogues: list[Dialogue], positions: list[list[int]], batch_tokens: int) -> list[np.ndarray]:
        self.model.eval()
        out: list[np.ndarray] = [np.zeros(0)] * len(dialogues)
        for idx in budget_batches([len(d.ids) for d in dialogues], batch_tokens):
            logits, _ = token_logits(self.model, [dialogues[i] for i in idx], self.tok.pad_token_id)
            logits = logits.double().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = logits[row, positions[i]]
        return out

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        if self.kind == "orm":
            dialogues = [encode_dialogue(self.tok, p, r, self.max_length) for p, r in zip(prompts, responses)]
            last = self.logits_at(dialogues, [[len(d.ids) - 1] for d in dialogues], batch_tokens)
            return np.array([x[0] for x in last], dtype=np.float64)
        dialogues = []
        for p, r in zip(prompts, responses):
            dialogues.append(encode_dialogue(self.tok, p, r, self.max_length, step_ends(r, split_steps(r))))
        # Every response keeps at least its last step's end; the fallback only guards odd tokenizations.
        steps = self.logits_at(dialogues, [d.marks or [len(d.ids) - 1] for d in dialogues], batch_tokens)
        return np.array([aggregate_steps(expit(x), self.aggregate) for x in steps], dtype=np.float64)

    def describe(self) -> dict:
        return {"kind": self.kind, "params": n_params(self.model), "metrics": dict(self.info["metrics"]),
                "history": {k: [tuple(x) for x in v] for k, v in self.info["history"].items()}}

    def value_init(self) -> ValueInit | None:
        # The ORM's head already reads a sequence value at its last token, like the classifier's.
        return ValueInit(model=self.model, offset=0.0) if self.kind == "orm" else None


def _tokenizer_and_model(ctx: RMContext):
    trust = ctx.cfg.model.trust_remote_code
    tok = AutoTokenizer.from_pretrained(str(ctx.base), trust_remote_code=trust)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(str(ctx.base), num_labels=1, trust_remote_code=trust)
    model.config.pad_token_id = tok.pad_token_id
    return tok, model.to(resolve_device(ctx.cfg.device))


def _train(ctx, opts, tok, model, examples: list[Example], name: str) -> tuple[dict, dict[str, float]]:
    start = time.time()
    history = fit(model, examples, [len(d.ids) for d, _, _ in examples], lambda b: token_bce(model, b, tok.pad_token_id),
                  lr=opts.lr, epochs=opts.epochs, batch_size=opts.batch_size, train_cfg=ctx.cfg.train,
                  progress=ctx.progress, name=f"{name} train")
    return history, {"train/loss": mean_tail(history["train/loss"], len(examples) // opts.batch_size // 4),
                     "train/n_examples": float(len(examples)), "train/seconds": time.time() - start}


def _save(out: Path, tok, model, metrics: dict[str, float], history: dict) -> None:
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    (out / "rmexp_process.json").write_text(json.dumps({"metrics": metrics, "history": history}))


def _common_key(ctx: RMContext, opts) -> list:
    t = ctx.cfg.train
    return [base_identity(ctx.base), opts.lr, opts.epochs, opts.batch_size, t.max_length, t.seed, t.warmup_ratio,
            t.schedule, t.weight_decay, t.grad_clip, ctx.cfg.device, PROCESS_VERSION, numerics()]


def _loader(ctx: RMContext, kind: str, aggregate: str | None):
    def load(entry: Path) -> TokenHeadScorer:
        tok = AutoTokenizer.from_pretrained(str(entry / "model"))
        model = AutoModelForSequenceClassification.from_pretrained(str(entry / "model"), num_labels=1)
        info = json.loads((entry / "rmexp_process.json").read_text())
        return TokenHeadScorer(model.to(resolve_device(ctx.cfg.device)).eval(), tok, ctx.cfg.train.max_length, info,
                               kind, aggregate)
    return load


# ---------------------------------------------------------------------------------------------------
def train_orm(ctx: RMContext, opts: ORMOptions, out: Path) -> None:
    cfg = ctx.cfg
    torch.manual_seed(cfg.train.seed)
    tok, model = _tokenizer_and_model(ctx)
    train_rows, eval_rows = split_pairs(ctx.prefs, cfg.data.eval_fraction, cfg.data.seed)
    examples: list[Example] = []
    for r in train_rows:
        for side, preferred in (("chosen", 1.0), ("rejected", 0.0)):
            if opts.labels == "gold" and f"gold_{side}" not in r:
                raise ValueError(f"rm.labels=gold: preference row {r.get('id', '?')} has no gold_{side} "
                                 f"(only the toy world's rows carry gold scores; use rm.labels=preference)")
            y = float(r[f"gold_{side}"]) if opts.labels == "gold" else preferred
            d = encode_dialogue(tok, r["prompt"], r[side], cfg.train.max_length)
            positions = list(range(d.start, len(d.ids)))
            examples.append((d, positions, [y] * len(positions)))
    if not examples:
        raise ValueError(f"rm=orm: no training pairs (data.size={cfg.data.size})")
    history, metrics = _train(ctx, opts, tok, model, examples, "orm")
    scorer = TokenHeadScorer(model, tok, cfg.train.max_length, {}, "orm")
    metrics |= heldout_pair_accuracy(scorer, [_orient_by_gold(r) for r in eval_rows])
    _save(out, tok, model, metrics, history)


def build_orm(ctx: RMContext) -> TokenHeadScorer:
    opts = parse_options(ORMOptions, ctx.cfg.rm, "orm")
    key = config_hash(*_common_key(ctx, opts), rows_identity(ctx.prefs), ctx.cfg.data.eval_fraction,
                      ctx.cfg.data.seed, opts.labels)
    return cached("rm", key, ctx.cache, lambda out: train_orm(ctx, opts, out), _loader(ctx, "orm", None), label="orm")


# ---------------------------------------------------------------------------------------------------
def _step_examples(tok, rows: list[dict], max_length: int) -> list[Example]:
    out = []
    for r in rows:
        d = encode_dialogue(tok, r["prompt"], r["response"], max_length, step_ends(r["response"], r["steps"]))
        kept = r["labels"][len(r["labels"]) - len(d.marks):]  # a cut from the left drops the first steps
        out.append((d, d.marks, [float(y) for y in kept]))
    return out


def train_prm(ctx: RMContext, opts: PRMOptions, out: Path) -> None:
    cfg = ctx.cfg
    torch.manual_seed(cfg.train.seed)
    tok, model = _tokenizer_and_model(ctx)
    train = step_solutions(ctx.world, opts.n_solutions, opts.wrong_rate, cfg.data.seed, "train")
    held = step_solutions(ctx.world, PRM_EVAL_SOLUTIONS, opts.wrong_rate, cfg.data.seed, "heldout")
    history, metrics = _train(ctx, opts, tok, model, _step_examples(tok, train, cfg.train.max_length), "prm")
    scorer = TokenHeadScorer(model, tok, cfg.train.max_length, {}, "prm", opts.aggregate)
    examples = _step_examples(tok, held, cfg.train.max_length)
    logits = np.concatenate(scorer.logits_at([d for d, _, _ in examples], [p for _, p, _ in examples], 4096))
    labels = np.concatenate([y for _, _, y in examples])
    require_finite("rm=prm held-out step logits", logits)
    metrics["eval/step_acc"] = float(((logits > 0) == (labels > 0.5)).mean())
    metrics["eval/step_n"] = float(len(labels))
    _save(out, tok, model, metrics, history)


def build_prm(ctx: RMContext) -> TokenHeadScorer:
    opts = parse_options(PRMOptions, ctx.cfg.rm, "prm")
    # The training data are the world's step solutions, not the trial's preference rows; the aggregate
    # is a scoring choice, so min and prod share one trained model.
    key = config_hash(*_common_key(ctx, opts), ctx.world.seed, WORLD_VERSION, ctx.cfg.data.seed, opts.n_solutions,
                      opts.wrong_rate)
    scorer = cached("rm", key, ctx.cache, lambda out: train_prm(ctx, opts, out), _loader(ctx, "prm", opts.aggregate),
                    label="prm")
    # Agreement with the truth on the trial's held-out pairs (all domains), measured per trial: cheap, and
    # the trained model does not depend on these rows.
    _, eval_rows = split_pairs(ctx.prefs, ctx.cfg.data.eval_fraction, ctx.cfg.data.seed)
    scorer.info["metrics"] |= heldout_pair_accuracy(scorer, [_orient_by_gold(r) for r in eval_rows])
    return scorer


ORM = register_rm_kind(RMKind("orm", ORMOptions, build_orm))
PRM = register_rm_kind(RMKind("prm", PRMOptions, build_prm))
