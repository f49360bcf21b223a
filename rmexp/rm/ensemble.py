"""`rm=ensemble`: K classifier RMs that differ only in their training seed, combined per response.

Members are ordinary cached classifier RMs (the classifier kind built with `train.seed` = train.seed + i),
so an ensemble of K costs K trainings once and shares them with single-RM trials of those seeds.
Combination (Coste et al. 2024, "Reward model ensembles help mitigate overoptimization"):
`mean`, `mean_minus_std` (mean - std_coef * population std over members) or `min`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf, open_dict

from rmexp.config import CONF_DIR
from rmexp.rm.base import RM_KINDS, RMContext, RMKind, Scorer, ValueInit, register_rm_kind
from rmexp.rm.classifier import _orient_by_gold, split_pairs
from rmexp.rm.lm import heldout_pair_accuracy
from rmexp.rm.options import fail, parse_options

COMBINE = ("mean", "mean_minus_std", "min")


@dataclass
class EnsembleOptions:
    members: int
    combine: str
    std_coef: float

    def check(self) -> None:
        if not self.members >= 2:
            fail("members", self.members, "an ensemble needs at least 2 members")
        if self.combine not in COMBINE:
            fail("combine", self.combine, f"choose one of {list(COMBINE)}")
        if self.std_coef < 0:
            fail("std_coef", self.std_coef, "it must be >= 0")


def combine_scores(scores: np.ndarray, how: str, std_coef: float) -> np.ndarray:
    """(K members, N responses) -> N combined rewards."""
    if how == "mean":
        return scores.mean(0)
    if how == "mean_minus_std":
        return scores.mean(0) - std_coef * scores.std(0)
    return scores.min(0)


@dataclass
class EnsembleScorer:
    members: list[Scorer]
    combine: str
    std_coef: float
    own_metrics: dict[str, float] = field(default_factory=dict)  # what the combined scorer measured (eval/acc)
    kind: str = "ensemble"

    @property
    def tok(self):
        return self.members[0].tok

    def member_scores(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        return np.stack([np.asarray(m.score(prompts, responses, batch_tokens), dtype=np.float64) for m in self.members])

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        return combine_scores(self.member_scores(prompts, responses, batch_tokens), self.combine, self.std_coef)

    def describe(self) -> dict:
        """Members' mean of each training metric under its own name (comparable to one RM's), its spread over
        seeds as ensemble/<name>_std; what the combined scorer measured itself (eval/acc on the held-out
        pairs) replaces the members' mean, which stays as ensemble/member_mean/<name>."""
        described = [m.describe() for m in self.members]
        metrics: dict[str, float] = {"ensemble/members": float(len(described))}
        for name in sorted(set.intersection(*(set(d["metrics"]) for d in described))):
            values = [d["metrics"][name] for d in described]
            metrics[f"ensemble/member_mean/{name}" if name in self.own_metrics else name] = float(np.mean(values))
            metrics[f"ensemble/{name}_std"] = float(np.std(values))
        return {"kind": self.kind, "params": sum(d["params"] for d in described), "metrics": metrics | self.own_metrics,
                "history": described[0]["history"]}

    def value_init(self) -> ValueInit | None:
        return self.members[0].value_init()


def member_config(cfg, seed: int):
    """The trial's config with the classifier kind's defaults as `rm` and another training seed."""
    path = CONF_DIR / "rm" / "classifier.yaml"
    node = OmegaConf.load(path) if path.is_file() else OmegaConf.create({"kind": "classifier"})
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.rm = node
        member.train.seed = seed
    return member


def build(ctx: RMContext) -> EnsembleScorer:
    opts = parse_options(EnsembleOptions, ctx.cfg.rm, "ensemble")
    classifier = RM_KINDS["classifier"]
    members = []
    for i in range(opts.members):
        member_ctx = RMContext(member_config(ctx.cfg, ctx.cfg.train.seed + i), ctx.world, ctx.base, ctx.prefs,
                               ctx.cache, ctx.progress)
        members.append(classifier.build(member_ctx))
    scorer = EnsembleScorer(members, opts.combine, opts.std_coef)
    # The combined scorer on the held-out pairs (oriented by gold), beside the members' mean eval/acc.
    _, eval_rows = split_pairs(ctx.prefs, ctx.cfg.data.eval_fraction, ctx.cfg.data.seed)
    held = heldout_pair_accuracy(scorer, [_orient_by_gold(r) for r in eval_rows])
    scorer.own_metrics = held
    return scorer


ENSEMBLE = register_rm_kind(RMKind("ensemble", EnsembleOptions, build, packed_training=True))  # classifier members
