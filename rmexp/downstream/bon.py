"""Best-of-N (`downstream.bon`): N_max policy samples per held-out prompt, scored by the RM and the gold oracle.

The curves themselves are `rmexp.bon`; this module draws (and caches) the samples and registers the method.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rmexp.downstream.base import DownstreamContext, DownstreamMethod, StageOutput, register_downstream, write_jsonl

SAMPLES_VERSION = 1  # bump when sampling changes, so cached samples are redrawn


def eval_prompts(world, per_domain: int):
    from rmexp.world.domains import DOMAINS

    return [p for d in DOMAINS for p in world.sample_prompts(d, "heldout", per_domain)]


def policy_samples(cfg, world, cache: Path, progress: bool):
    """N_max samples per held-out prompt from the policy, cached: they do not depend on the RM, so every trial of
    a sweep over RMs reads the same samples (drawn once, by whichever trial gets there first)."""
    from rmexp import zoo
    from rmexp.cache import cached, content_id, write_json
    from rmexp.config import config_hash, torch_threads
    from rmexp.sampling import SAMPLER_VERSION
    from rmexp.world.core import WORLD_VERSION

    pol, n = cfg.downstream.policy, cfg.downstream.bon.n_samples
    path, pcfg = zoo.policy_path(pol.model, world, cache, progress)
    prompts = eval_prompts(world, cfg.downstream.bon.prompts_per_domain)
    key = config_hash(content_id(path), world.seed, WORLD_VERSION, SAMPLES_VERSION, pol.temperature,
                      pol.max_new_tokens, n, [p.key for p in prompts], torch_threads(), SAMPLER_VERSION)

    def draw(folder: Path) -> None:
        model, tok = zoo.load_causal_lm(path)
        samples = zoo.sample(model, tok, [p.text for p in prompts], n, pol.temperature, pol.max_new_tokens,
                             seed=world.seed)
        write_json(folder / "samples.json", samples)

    samples = cached("samples", key, cache, draw, lambda folder: json.loads((folder / "samples.json").read_text()),
                     label=pol.model)
    return prompts, samples, pcfg


def run(ctx: DownstreamContext) -> StageOutput:
    from rmexp import bon

    cfg, world = ctx.cfg, ctx.world
    prompts, samples, _ = policy_samples(cfg, world, ctx.cache, ctx.progress)
    gold = np.array([[world.gold(p, s) for s in row] for p, row in zip(prompts, samples)])
    flat_prompts = [p.text for p, row in zip(prompts, samples) for _ in row]
    proxy = ctx.rm.score(flat_prompts, [s for row in samples for s in row],
                         cfg.benchmark.score_batch_tokens).reshape(gold.shape)
    ns = tuple(2 ** k for k in range(9) if 2 ** k <= gold.shape[1])  # 1, 2, 4, ... up to N_max
    metrics = bon.bon_metrics(gold, proxy, [p.domain for p in prompts], ns)
    metrics |= bon.bon_extra_metrics(gold, proxy, ns)  # SE of the gains, proxy gains
    rows = [{"prompt": p.text, "domain": p.domain, "samples": row, "gold": g.tolist(), "proxy": x.tolist()}
            for p, row, g, x in zip(prompts, samples, gold, proxy)]
    artifacts = [write_jsonl(ctx.out_dir / "bon_samples.jsonl", rows),
                 Path(bon.plot_bon_curves(metrics, ctx.out_dir / "bon_curves.png"))]
    return StageOutput(metrics=metrics, history={}, artifacts=artifacts)


# Outcomes: the gold of the RM's pick among N (gold_N) and its gain over one sample, overall and per domain.
# N=1 and the oracle curve (oracle_N) depend only on the policy's samples: diagnostics, not RM outcomes.
BON = register_downstream(DownstreamMethod(
    name="bon", uses_rm=True, outcomes=(r"(.+/)?gold_(?!1$)\d+", r"(.+/)?gain_(?!1$)\d+"), run=run,
    headline=(r"gain_\d+",)))
