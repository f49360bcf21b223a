"""Best-of-N (`downstream.bon`): N_max policy samples per eval prompt, scored by the RM and the gold checker.

The prompts and the checker come from the trial's gold source (`rmexp.gold`: the toy world's held-out prompts
and verifiers, or a real task's items and checker); the policy is a zoo model or an hf policy (`rmexp.policy`).
The curves themselves are `rmexp.bon`; this module draws (and caches) the samples and registers the method.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rmexp.downstream.base import DownstreamContext, DownstreamMethod, StageOutput, register_downstream, write_jsonl

SAMPLES_VERSION = 1  # bump when sampling changes, so cached samples are redrawn


def policy_samples(cfg, world, cache: Path, progress: bool, gold=None):
    """N_max samples per eval prompt from the policy, cached: they do not depend on the RM, so every trial of a
    sweep over RMs reads the same samples (drawn once, by whichever trial gets there first).

    Key: the policy's content (`rmexp.policy.policy_identity`), the gold source's rows (toy: world seed and
    version, and the prompts' keys), the sampling settings, torch threads and the sampler's version; an hf policy
    adds its query token ids (chat template included), its stop ids and the device it samples on."""
    from rmexp import zoo
    from rmexp.cache import cached, content_id, write_json
    from rmexp.config import config_hash, numerics
    from rmexp.gold import gold_source
    from rmexp.policy import is_zoo, load_policy, load_tokenizer, policy_identity, queries, stop_ids
    from rmexp.sampling import SAMPLER_VERSION

    gold = gold if gold is not None else gold_source(cfg, world)
    pol, n = cfg.downstream.policy, cfg.downstream.bon.n_samples
    path, pcfg = zoo.policy_path(pol, world, cache, progress)
    prompts = gold.prompts(cfg.downstream.bon.prompts_per_domain)
    zoo_policy = is_zoo(pcfg)
    parts = [content_id(path) if zoo_policy else policy_identity(path), *gold.identity(), SAMPLES_VERSION,
             pol.temperature, pol.max_new_tokens, n, [p.key for p in prompts], numerics(), SAMPLER_VERSION]
    if not zoo_policy:  # a zoo policy's queries and stops follow from the world's template: not in its key
        from rmexp.rm import resolve_device

        tok, generation_config = load_tokenizer(path, pcfg)
        device = resolve_device(cfg.device)
        qs, stops = queries(tok, [p.text for p in prompts], False), stop_ids(tok, generation_config)
        parts += [config_hash(qs), stops, str(device.type)]

    def draw(folder: Path) -> None:
        if zoo_policy:
            zoo_model, zoo_tok = zoo.load_causal_lm(path)
            samples = zoo.sample(zoo_model, zoo_tok, [p.text for p in prompts], n, pol.temperature,
                                 pol.max_new_tokens, seed=world.seed)
        else:
            from rmexp.sampling import sample_texts

            model, _ = load_policy(path, pcfg)
            samples = sample_texts(model.to(device), tok, qs, n, pol.temperature, pol.max_new_tokens,
                                   seed=world.seed, stop_ids=stops)
        write_json(folder / "samples.json", samples)

    samples = cached("samples", config_hash(*parts), cache, draw,
                     lambda folder: json.loads((folder / "samples.json").read_text()), label=pcfg.name)
    return prompts, samples, pcfg


def run(ctx: DownstreamContext) -> StageOutput:
    from rmexp import bon

    cfg, gold_src = ctx.cfg, ctx.gold_source()
    prompts, samples, _ = policy_samples(cfg, ctx.world, ctx.cache, ctx.progress, gold_src)
    gold = np.array([[gold_src.gold(p, s) for s in row] for p, row in zip(prompts, samples)])
    flat_prompts = [p.text for p, row in zip(prompts, samples) for _ in row]
    proxy = ctx.rm.score(flat_prompts, [s for row in samples for s in row],
                         cfg.benchmark.score_batch_tokens).reshape(gold.shape)
    ns = tuple(2 ** k for k in range(9) if 2 ** k <= gold.shape[1])  # 1, 2, 4, ... up to N_max
    metrics = bon.bon_metrics(gold, proxy, [p.domain for p in prompts], ns)
    metrics |= bon.bon_extra_metrics(gold, proxy, ns)  # SE of the gains, proxy gains
    rows = [{"key": p.key, "prompt": p.text, "domain": p.domain, "samples": row, "gold": g.tolist(),
             "proxy": x.tolist()} for p, row, g, x in zip(prompts, samples, gold, proxy)]
    artifacts = [write_jsonl(ctx.out_dir / "bon_samples.jsonl", rows),
                 Path(bon.plot_bon_curves(metrics, ctx.out_dir / "bon_curves.png"))]
    return StageOutput(metrics=metrics, history={}, artifacts=artifacts)


# Outcomes: the gold of the RM's pick among N (gold_N) and its gain over one sample, overall and per domain.
# N=1 and the oracle curve (oracle_N) depend only on the policy's samples: diagnostics, not RM outcomes.
BON = register_downstream(DownstreamMethod(
    name="bon", uses_rm=True, outcomes=(r"(.+/)?gold_(?!1$)\d+", r"(.+/)?gain_(?!1$)\d+"), run=run,
    headline=(r"gain_\d+",)))
