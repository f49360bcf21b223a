"""`rlvr`: RL with verifiable rewards -- the RL stage of rmexp.ppo with the world's verifier as the reward, no RM.

The reward of a (prompt, response) is exactly the world's gold score (`World.gold`), minus the same missing-eos
penalty PPO applies; gold is measured on the held-out prompts as for `ppo/*` (same prompts, same evaluation draws),
so `rlvr/gold` is the ceiling an RM-driven run of the same settings can hope to reach, a reference line.

The algorithm is `downstream.rlvr.algorithm`: `grpo` (the default: group-relative advantages need no value model,
and there is no RM to start one from), or `ppo` with a value model on the SFT policy's own weights and a zero
score head (every initial value 0). Its KL coefficient is `downstream.rlvr.kl_coef` (a reward in [0, 1] needs another
coefficient than an RM's normalised score); every other setting is `downstream.ppo`'s. Nothing RM- or data-related
enters the cache key (policy weights, world, RL and evaluation settings, device): a sweep over RMs or data computes
it once, and the trial reads it from the cache (`rlvr/seconds` is then the time of that one computation; the
trial's own `time/rlvr_s` shows the read).
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from rmexp.cache import MANIFEST, cached
from rmexp.config import config_hash, numerics
from rmexp.downstream import DownstreamContext, DownstreamMethod, StageOutput, register_downstream
from rmexp.guards import require_finite
from rmexp.policy import policy_identity
from rmexp.rm.base import ValueInit
from rmexp.world.core import WORLD_VERSION, World

RLVR_VERSION = 1  # bump when the RLVR stage changes, so cached results are recomputed


class VerifierScorer:
    """A scorer whose reward is the gold checker: `score` returns the gold of each (prompt, response).

    `source` is a gold source (`rmexp.gold`) or a World (its toy gold source). Prompts are matched by their text
    to the source's prompts (the world's: both splits); a text it does not know is refused. `value_init` is None
    unless a value model is asked for (`value_from`: a policy directory, whose weights get a zero score head)."""

    kind = "verifier"

    def __init__(self, source, tok, value_from: Path | None = None, device: torch.device | None = None):
        from rmexp.gold import ToyGold

        self.gold = ToyGold(source) if isinstance(source, World) else source
        self.world = getattr(self.gold, "world", None)
        self.tok = tok
        self._value_from, self._device = value_from, device
        self._by_text = self.gold.known()

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray:
        unknown = [p for p in prompts if p not in self._by_text]
        if unknown:
            whose = (f"the world's prompts (world seed {self.world.seed})" if self.world is not None
                     else f"task={self.gold.name}'s prompts")
            raise ValueError(f"verifier: prompt {unknown[0]!r} is not one of {whose}; rlvr needs prompts the gold "
                             f"checker can verify")
        return np.array([self.gold.gold(self._by_text[p], r) for p, r in zip(prompts, responses)], dtype=np.float64)

    def describe(self) -> dict:
        return {"kind": self.kind, "params": 0, "metrics": {}, "history": {}}

    def value_init(self) -> ValueInit | None:
        if self._value_from is None:
            return None
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(self._value_from), num_labels=1)
        model.config.pad_token_id = self.tok.pad_token_id
        torch.nn.init.zeros_(model.score.weight)  # V = 0 everywhere at the start: no reward is known yet
        return ValueInit(model.to(self._device or torch.device("cpu")), 0.0)


def rl_config(cfg):
    """The trial config RLVR's RL stage runs on: downstream.ppo's settings with rlvr's algorithm and KL coefficient."""
    rl_cfg = copy.deepcopy(cfg)
    OmegaConf.update(rl_cfg, "downstream.ppo.algorithm", cfg.downstream.rlvr.algorithm)
    OmegaConf.update(rl_cfg, "downstream.ppo.kl_coef", cfg.downstream.rlvr.kl_coef)
    return rl_cfg


def rlvr_key(cfg, policy_dir: Path, world_seed: int) -> str:
    """What determines the RLVR result: the policy's weights and sampling, the world, the RL settings it runs with
    (`rl_config`) and the evaluation settings, the device -- nothing about the RM or the preference data."""
    ppo = {k: v for k, v in OmegaConf.to_container(rl_config(cfg).downstream.ppo, resolve=True).items()
           if k not in ("enabled", "algorithm")}
    pol = {k: v for k, v in OmegaConf.to_container(cfg.downstream.policy, resolve=True).items() if k != "model"}
    return config_hash(policy_identity(policy_dir), pol, world_seed, WORLD_VERSION, ppo, cfg.downstream.rlvr.algorithm,
                       cfg.device, RLVR_VERSION, numerics())


def _renamed(d: dict, old: str, new: str) -> dict:
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in d.items()}


def write_stage(dir_: Path, metrics: dict[str, float], history: dict[str, list[tuple[int, float]]]) -> None:
    (dir_ / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (dir_ / "history.json").write_text(json.dumps(history))


def read_stage(dir_: Path, out_dir: Path, prefix: str) -> StageOutput:
    """A cached stage's metrics and history, with its other files copied into the trial's folder as
    `<prefix>_<name>` (the cache entry itself stays read-only)."""
    metrics = json.loads((dir_ / "metrics.json").read_text())
    history = {k: [tuple(x) for x in v] for k, v in json.loads((dir_ / "history.json").read_text()).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for f in sorted(dir_.iterdir()):
        if f.name not in ("metrics.json", "history.json", MANIFEST):
            artifacts.append(Path(shutil.copy(f, out_dir / f"{prefix}_{f.name}")))
    return StageOutput(metrics=metrics, history=history, artifacts=artifacts)


def run(ctx: DownstreamContext) -> StageOutput:
    from rmexp import zoo
    from rmexp.ppo import ppo_stage
    from rmexp.rm import resolve_device

    cfg, algorithm = ctx.cfg, ctx.cfg.downstream.rlvr.algorithm
    policy_dir, pcfg = zoo.policy_path(cfg.downstream.policy, ctx.world, ctx.cache, ctx.progress)
    gold = ctx.gold_source()
    rl_cfg = rl_config(cfg)

    def build(tmp: Path) -> None:
        _, tok = zoo.load_causal_lm(policy_dir, trust_remote_code=bool(pcfg.trust_remote_code))
        device = resolve_device(cfg.device)
        scorer = VerifierScorer(gold, tok, policy_dir if algorithm == "ppo" else None, device)
        title = f"RLVR ({algorithm.upper()}, verifier reward): policy {cfg.downstream.policy.model}"
        metrics, history, _ = ppo_stage(rl_cfg, ctx.world, scorer, ctx.cache, tmp, ctx.progress, title=title,
                                        gold=gold)
        metrics, history = _renamed(metrics, "ppo/", "rlvr/"), _renamed(history, "ppo/", "rlvr/")
        require_finite("rlvr", metrics)
        for name in ("ppo_curve.png", "ppo_samples.jsonl"):  # the files keep ppo_stage's names minus the prefix
            (tmp / name).rename(tmp / name[len("ppo_"):])
        write_stage(tmp, metrics, history)

    return cached("rlvr", rlvr_key(cfg, policy_dir, ctx.world.seed), ctx.cache, build,
                  lambda entry: read_stage(entry, Path(ctx.out_dir), "rlvr"), label=cfg.downstream.policy.model)


RLVR = register_downstream(DownstreamMethod(name="rlvr", uses_rm=False, outcomes=("gold", "gold_delta"), run=run,
                                                   trains_on_prompts=True))
