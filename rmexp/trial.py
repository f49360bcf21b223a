"""One trial, top to bottom: a pure function of its resolved config.

    1 base model -> 2 data + benchmarks (+ decontamination) -> 3 RM (kind `rm.kind`) -> 4 RewardBench 1/2
    -> 5 each enabled downstream method (best-of-N, PPO, ...)

Each expensive output is cached under `cache_dir` (`rmexp.cache`) by a hash of what determines it: zoo models
by their recipe, RMs by (base content, preference rows, training config), policy samples by (policy content,
gold task rows, sampling settings), so a sweep over downstream settings reuses trained RMs and a sweep over RMs reuses
samples.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rmexp import bench, zoo
from rmexp import data as data_sources
from rmexp.config import config_hash, load_model_config, numerics, run_threads, to_plain
from rmexp.downstream import DOWNSTREAM, DownstreamContext, headline_metrics
from rmexp.downstream.base import write_jsonl
from rmexp.gold import gold_source
from rmexp.rm import RM_KINDS, RMContext, Scorer
from rmexp.world.core import WORLD_VERSION, World
from rmexp.world.data import decontamination, rb2_length_scores

LENGTH_BASELINE = "length_baseline."  # param prefix of the "pick the longer" benchmark scores

# Keys that say where and how a trial runs, not what it computes: left out of its identity. The `fail_stage`
# test hook is among them: a trial asked to fail is the same trial as the one that succeeds.
NON_IDENTITY_KEYS = ("tracking", "ray", "sweep", "threads", "cache_dir", "fail_stage", "verbose")


class DecontaminationError(RuntimeError):
    pass


class InjectedFailure(RuntimeError):
    """Raised by the `fail_stage` test hook."""


@dataclass
class TrialResult:
    metrics: dict[str, float]
    params: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    datasets: list[dict[str, str]] = field(default_factory=list)  # rmexp.tracking.describe_dataset records


def trial_key(cfg: DictConfig) -> str:
    """Hash of what determines the metrics: the resolved config minus where it runs, the world's version (a store
    holding trials of an older world must not resume them: a random-init trial's config does not change with the
    world), plus the numerics it runs with (the torch thread count it is given, CPU kernels, library versions:
    rmexp.config.numerics)."""
    plain = to_plain(cfg)
    identity = {k: v for k, v in plain.items() if k not in NON_IDENTITY_KEYS}
    # model.rm_lr acts only through train.lr (its default), which the key holds resolved: a trial with the same
    # train.lr is the same trial whatever rm_lr said (and trials run before the recipe had the field keep their key)
    identity["model"] = {k: v for k, v in identity["model"].items() if k != "rm_lr"}
    if cfg.train.compile:  # compiled kernels: the compiler decides their last bits too (rm.classifier.train_identity)
        from rmexp.rm.classifier import compiler_identity

        identity["compiler"] = dict(compiler_identity())
    return config_hash(identity, WORLD_VERSION, {**numerics(), "threads": run_threads(cfg)})


def _maybe_fail(cfg: DictConfig, stage: str) -> None:
    if cfg.fail_stage == stage:
        raise InjectedFailure(f"fail_stage={stage}: this trial was asked to fail in stage {stage!r} (test hook)")


def trial_params(cfg: DictConfig, policy_family: str | None) -> dict[str, str]:
    nums = numerics()  # recorded with every run: what, beside the config, decided its last bits
    params = {
        "seed": cfg.seed, "torch_threads": nums["threads"], "cpu_kernels": nums["cpu"], "mkl_cbwr": nums["mkl_cbwr"],
        "torch": nums["torch"], "transformers": nums["transformers"],
        "model": cfg.model.name, "model.family": cfg.model.family, "model.size": cfg.model.size,
        "model.init": cfg.model.init, "data.source": cfg.data.source, "data.size": cfg.data.size,
        "data.label_noise": cfg.data.label_noise, "data.domain_weights": json.dumps(dict(cfg.data.domain_weights)),
        "train.epochs": cfg.train.epochs, "train.lr": cfg.train.lr, "train.batch_size": cfg.train.batch_size,
        "train.packing": cfg.train.packing, "train.compile": cfg.train.compile,
        "benchmark.source": cfg.benchmark.source, "policy": cfg.downstream.policy.model, "task": cfg.task.name,
        "ppo.enabled": cfg.downstream.ppo.enabled, "rm.kind": cfg.rm.kind,
    }
    if cfg.downstream.policy.path is not None:
        params["policy.path"] = cfg.downstream.policy.path
    if policy_family is not None:  # lineage: does the RM share the policy's base family?
        params["policy.family"] = policy_family
        params["lineage"] = "same" if policy_family == cfg.model.family else "cross"
    return {k: str(v) for k, v in params.items()}


def _datasets(cfg: DictConfig, prefs: list[dict], rb2: list[dict], rb1: list[dict], gold=None) -> list[dict[str, str]]:
    """The trial's preference rows, benchmarks and gold task (when a downstream method uses it) as MLflow dataset
    records (the runs table's Dataset column)."""
    from rmexp.tracking import describe_dataset

    d, b = cfg.data, cfg.benchmark
    data_src = ({"generator": "rmexp.world", "world.seed": cfg.world.seed, **to_plain(d)} if d.source == "toy"
                else str(d.path) if d.path else {"sources": json.dumps(to_plain(d)["sources"]), "size": d.size,
                                                  "seed": d.seed})
    out = [describe_dataset("preferences", prefs, data_src, "train")]
    for name, rows, path in (("rewardbench2", rb2, "rb2_path"), ("rewardbench1", rb1, "rb1_path")):
        if rows:
            src = ({"generator": "rmexp.world", "world.seed": cfg.world.seed, **to_plain(b)} if b.source == "toy"
                   else str(OmegaConf.select(b, path)))
            out.append(describe_dataset(name, rows, src, "eval"))
    if gold is not None:
        rows, src = gold.dataset()
        out.append(describe_dataset(f"task-{gold.name}", rows, src, "eval"))
    return out


# ---------------------------------------------------------------------------------------------------
def benchmark_stage(cfg: DictConfig, rm: Scorer, rb2: list[dict], rb1: list[dict],
                    out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    metrics: dict[str, float] = {}
    artifacts: list[Path] = []
    budget = cfg.benchmark.score_batch_tokens
    if rb2:
        # Every completion of every row in one length-bucketed scoring pass.
        flat = [(i, c) for i, row in enumerate(rb2) for c in list(row["chosen"]) + list(row["rejected"])]
        scores = rm.score([rb2[i]["prompt"] for i, _ in flat], [c for _, c in flat], budget)
        per_row, pos = [], 0
        for row in rb2:
            n_c, n_r = len(row["chosen"]), len(row["rejected"])
            per_row.append({"id": row["id"], "subset": row["subset"],
                            "scores_chosen": scores[pos:pos + n_c].tolist(),
                            "scores_rejected": scores[pos + n_c:pos + n_c + n_r].tolist()})
            pos += n_c + n_r
        result = bench.score_rb2(per_row)
        metrics |= bench.metric_dict(result, "rb2")
        for row, ex in zip(per_row, result.per_example):
            row["result"] = ex["result"]
        artifacts.append(write_jsonl(out_dir / "rb2_scores.jsonl", per_row))
        # "Pick the longer" baseline on the same rows: length must not be a shortcut. A property of the rows, not
        # of the RM: run_trial moves it into the params, away from the RM's scores.
        for name, value in bench.score_rb2(rb2_length_scores(rb2)).scores.items():
            metrics[f"{LENGTH_BASELINE}rb2.{name}"] = value
    if rb1:
        sc = rm.score([r["prompt"] for r in rb1], [r["chosen"] for r in rb1], budget)
        sr = rm.score([r["prompt"] for r in rb1], [r["rejected"] for r in rb1], budget)
        per_row = [{"id": r["id"], "subset": r["subset"], "score_chosen": float(c), "score_rejected": float(s)}
                   for r, c, s in zip(rb1, sc, sr)]
        metrics |= bench.metric_dict(bench.score_rb1(per_row), "rb1")
        artifacts.append(write_jsonl(out_dir / "rb1_scores.jsonl", per_row))
    return metrics, artifacts


# ---------------------------------------------------------------------------------------------------
def run_trial(cfg: DictConfig, out_dir: Path, progress: Callable[[str], None] | None = None) -> TrialResult:
    say = progress or (lambda msg: print(f"[trial] {msg}", flush=True))
    show_bars = progress is None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir).expanduser().resolve()
    start = time.time()
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # tracking logs it to the run
    artifacts: list[Path] = []
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}

    # 1. World and base model (the zoo builds it on first use).
    world = World(cfg.world.seed)
    t = time.time()
    say(f"base model {cfg.model.name}")
    base = zoo.model_path(cfg.model, world, cache, show_bars)
    timings["time/base_s"] = time.time() - t

    # 2. Preference data and benchmarks, and the decontamination check where they meet.
    prefs = data_sources.preference_rows(cfg, world)
    rb2, rb1 = data_sources.benchmark_rows(cfg, world)
    report = decontamination([r["prompt"] for r in prefs], [r["prompt"] for r in rb2 + rb1],
                             cfg.benchmark.decontam_ngram)
    metrics |= report.as_metrics()
    enabled = [m for m in DOWNSTREAM.values() if cfg.downstream[m.name].enabled]
    gold = gold_source(cfg, world) if enabled else None  # the downstream methods' prompts and checker
    datasets = _datasets(cfg, prefs, rb2, rb1, gold)
    if report.overlap > cfg.benchmark.decontam_max_overlap:
        raise DecontaminationError(
            f"{report.exact} exact and {report.ngram} {report.ngram_size}-gram overlaps between training and "
            f"benchmark prompts ({report.overlap:.1%} > benchmark.decontam_max_overlap="
            f"{cfg.benchmark.decontam_max_overlap})")
    if cfg.data.source == "toy":
        metrics["data/label_noise_realised"] = float(np.mean([r["gold_chosen"] < r["gold_rejected"] for r in prefs]))

    # 3. Reward model of kind rm.kind (trained once per base, rows and settings; cached).
    _maybe_fail(cfg, "rm")
    t = time.time()
    say(f"reward model ({cfg.rm.kind}) on {len(prefs)} pairs")
    rm = RM_KINDS[cfg.rm.kind].build(RMContext(cfg=cfg, world=world, base=base, prefs=prefs, cache=cache,
                                               progress=show_bars))
    described = rm.describe()
    metrics |= described["metrics"]
    history = {k: [tuple(x) for x in v] for k, v in described["history"].items()}
    metrics["rm/params"] = float(described["params"])
    timings["time/rm_s"] = time.time() - t

    # 4. RewardBench 2 and 1, scored by the RM.
    _maybe_fail(cfg, "bench")
    t = time.time()
    say(f"RewardBench scoring: {len(rb2)} RB2 rows, {len(rb1)} RB1 pairs")
    bench_metrics, bench_artifacts = benchmark_stage(cfg, rm, rb2, rb1, out_dir)
    metrics |= bench_metrics
    artifacts += bench_artifacts
    timings["time/bench_s"] = time.time() - t

    # 5. Each enabled downstream method, in registry order (rmexp/downstream/).
    policy_family = load_model_config(cfg.downstream.policy.model).family if enabled else None
    for method in enabled:
        _maybe_fail(cfg, method.name)
        t = time.time()
        say(f"downstream {method.name}")
        result = method.run(DownstreamContext(cfg=cfg, world=world, rm=rm if method.uses_rm else None, cache=cache,
                                              out_dir=out_dir, progress=show_bars, prefs=prefs, gold=gold))
        metrics |= result.metrics
        history |= result.history
        artifacts += result.artifacts
        timings[f"time/{method.name}_s"] = time.time() - t

    timings["time/total_s"] = time.time() - start
    metrics |= timings
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    artifacts.append(out_dir / "metrics.json")
    say(f"done in {timings['time/total_s']:.1f} s: " + ", ".join(
        f"{k}={metrics[k]:.3f}" for k in ("eval/acc", "rb2/overall", "rb1/overall", *headline_metrics(metrics))
        if k in metrics))
    params = trial_params(cfg, policy_family)
    for k in [k for k in metrics if k.startswith(LENGTH_BASELINE)]:
        params[k] = f"{metrics.pop(k):.4f}"
    return TrialResult(metrics=metrics, params=params, history=history, artifacts=artifacts, datasets=datasets)
