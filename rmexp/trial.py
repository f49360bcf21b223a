"""One trial, top to bottom: a pure function of its resolved config.

    base model -> data + benchmarks (+ decontamination) -> RM training -> RewardBench 1/2 -> BoN -> PPO

Each expensive output is cached under `cache_dir` by a hash of the config parts it depends on: zoo
models by their recipe, RMs by (base, world, data, train), policy samples by (policy, world, BoN
settings), so a sweep over downstream settings reuses trained RMs and a sweep over RMs reuses samples.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from rmexp import bench, bon, zoo
from rmexp import data as data_sources
from rmexp.config import config_hash, load_model_config, to_plain
from rmexp.rm import RM_VERSION, RewardModel, load_reward_model, train_reward_model
from rmexp.world.core import WORLD_VERSION, World
from rmexp.world.data import decontamination, rb2_length_scores
from rmexp.world.domains import DOMAINS

LENGTH_BASELINE = "length_baseline."  # param prefix of the "pick the longer" benchmark scores

# Keys that say where and how a trial runs, not what it computes: left out of its identity.
NON_IDENTITY_KEYS = ("tracking", "ray", "sweep", "threads", "cache_dir")


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
    plain = to_plain(cfg)
    return config_hash({k: v for k, v in plain.items() if k not in NON_IDENTITY_KEYS})


def _maybe_fail(cfg: DictConfig, stage: str) -> None:
    if cfg.fail_stage == stage:
        raise InjectedFailure(f"fail_stage={stage}: this trial was asked to fail in stage {stage!r} (test hook)")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def trial_params(cfg: DictConfig, policy_family: str | None) -> dict[str, str]:
    params = {
        "model": cfg.model.name, "model.family": cfg.model.family, "model.size": cfg.model.size,
        "model.init": cfg.model.init, "data.source": cfg.data.source, "data.size": cfg.data.size,
        "data.label_noise": cfg.data.label_noise, "data.domain_weights": json.dumps(dict(cfg.data.domain_weights)),
        "train.epochs": cfg.train.epochs, "train.lr": cfg.train.lr, "train.batch_size": cfg.train.batch_size,
        "benchmark.source": cfg.benchmark.source, "policy": cfg.downstream.policy.model,
        "ppo.enabled": cfg.downstream.ppo.enabled,
    }
    if policy_family is not None:  # lineage: does the RM share the policy's base family?
        params["policy.family"] = policy_family
        params["lineage"] = "same" if policy_family == cfg.model.family else "cross"
    return {k: str(v) for k, v in params.items()}


def _datasets(cfg: DictConfig, prefs: list[dict], rb2: list[dict], rb1: list[dict]) -> list[dict[str, str]]:
    """The trial's preference rows and benchmarks as MLflow dataset records (the runs table's Dataset column)."""
    from rmexp.tracking import describe_dataset

    d, b = cfg.data, cfg.benchmark
    data_src = ({"generator": "rmexp.world", "world.seed": cfg.world.seed, **to_plain(d)} if d.source == "toy"
                else str(d.path))
    out = [describe_dataset("preferences", prefs, data_src, "train")]
    for name, rows, path in (("rewardbench2", rb2, "rb2_path"), ("rewardbench1", rb1, "rb1_path")):
        if rows:
            src = ({"generator": "rmexp.world", "world.seed": cfg.world.seed, **to_plain(b)} if b.source == "toy"
                   else str(OmegaConf.select(b, path)))
            out.append(describe_dataset(name, rows, src, "eval"))
    return out


# ---------------------------------------------------------------------------------------------------
def _model_identity(cfg: DictConfig, base: Path) -> str:
    """What the base weights are: the zoo's content-hashed directory, or a checkpoint path and its mtimes."""
    if cfg.model.source == "toy":
        return base.name
    local = Path(cfg.model.path).expanduser()
    if local.is_dir():
        mtimes = sorted((f.name, f.stat().st_mtime_ns) for f in local.iterdir() if f.is_file())
        return f"{local.resolve()}|{mtimes}"
    return str(cfg.model.path)  # a hub id (resolved by the HF cache)


def reward_model_stage(cfg: DictConfig, world: World, base: Path, prefs: list[dict],
                       cache: Path, progress: bool) -> RewardModel:
    # Keyed by the rows themselves (not the data config): on-policy sampling settings, edited files and
    # ignored data options then all do the right thing. Locked: parallel trials that need the same RM
    # (e.g. a sweep over downstream settings) train it once.
    rows_hash = config_hash([[r["prompt"], r["chosen"], r["rejected"]] for r in prefs])
    key = config_hash(_model_identity(cfg, base), rows_hash, cfg.data.eval_fraction, cfg.data.seed, cfg.train,
                      cfg.device, RM_VERSION)
    path = cache / "rm" / f"{cfg.model.name}-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "rmexp_rm.json").exists():
            return train_reward_model(base, prefs, cfg, path, cfg.model.trust_remote_code, progress, cfg.device)
    return load_reward_model(path, cfg.model.trust_remote_code, cfg.device)


def benchmark_stage(cfg: DictConfig, rm: RewardModel, rb2: list[dict], rb1: list[dict],
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
        artifacts.append(_write_jsonl(out_dir / "rb2_scores.jsonl", per_row))
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
        artifacts.append(_write_jsonl(out_dir / "rb1_scores.jsonl", per_row))
    return metrics, artifacts


def eval_prompts(world: World, per_domain: int):
    return [p for d in DOMAINS for p in world.sample_prompts(d, "heldout", per_domain)]


def policy_samples(cfg: DictConfig, world: World, cache: Path, progress: bool):
    """N_max samples per held-out prompt from the policy, cached: they do not depend on the RM."""
    pol = cfg.downstream.policy
    path, pcfg = zoo.policy_path(pol.model, world, cache, progress)
    prompts = eval_prompts(world, cfg.downstream.bon.prompts_per_domain)
    key = config_hash(path.name, world.seed, WORLD_VERSION, pol, cfg.downstream.bon, [p.key for p in prompts])
    file = cache / "samples" / f"{pol.model}-{key}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    # Trials running in parallel need the same samples: one draws them, the others wait and read them.
    with FileLock(str(file) + ".lock"):
        if file.exists():
            return prompts, json.loads(file.read_text()), pcfg
        model, tok = zoo.load_causal_lm(path)
        samples = zoo.sample(model, tok, [p.text for p in prompts], cfg.downstream.bon.n_samples,
                             pol.temperature, pol.max_new_tokens, seed=world.seed)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(samples))
        tmp.replace(file)
    return prompts, samples, pcfg


def bon_stage(cfg: DictConfig, world: World, rm: RewardModel, cache: Path, out_dir: Path,
              progress: bool) -> tuple[dict[str, float], list[Path]]:
    prompts, samples, _ = policy_samples(cfg, world, cache, progress)
    gold = np.array([[world.gold(p, s) for s in row] for p, row in zip(prompts, samples)])
    flat_prompts = [p.text for p, row in zip(prompts, samples) for _ in row]
    proxy = rm.score(flat_prompts, [s for row in samples for s in row],
                     cfg.benchmark.score_batch_tokens).reshape(gold.shape)
    ns = tuple(2 ** k for k in range(9) if 2 ** k <= gold.shape[1])  # 1, 2, 4, ... up to N_max
    metrics = bon.bon_metrics(gold, proxy, [p.domain for p in prompts], ns)
    rows = [{"prompt": p.text, "domain": p.domain, "samples": row, "gold": g.tolist(), "proxy": x.tolist()}
            for p, row, g, x in zip(prompts, samples, gold, proxy)]
    artifacts = [_write_jsonl(out_dir / "bon_samples.jsonl", rows),
                 Path(bon.plot_bon_curves(metrics, out_dir / "bon_curves.png"))]
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
    datasets = _datasets(cfg, prefs, rb2, rb1)
    if report.overlap > cfg.benchmark.decontam_max_overlap:
        raise DecontaminationError(
            f"{report.exact} exact and {report.ngram} {report.ngram_size}-gram overlaps between training and "
            f"benchmark prompts ({report.overlap:.1%} > benchmark.decontam_max_overlap="
            f"{cfg.benchmark.decontam_max_overlap})")
    if cfg.data.source == "toy":
        metrics["data/label_noise_realised"] = float(np.mean([r["gold_chosen"] < r["gold_rejected"] for r in prefs]))

    # 3. Reward model (cached by base, world, data and training config).
    _maybe_fail(cfg, "rm")
    t = time.time()
    say(f"reward model on {len(prefs)} pairs")
    rm = reward_model_stage(cfg, world, base, prefs, cache, show_bars)
    metrics |= rm.info["metrics"]
    history = {k: [tuple(x) for x in v] for k, v in rm.info["history"].items()}
    timings["time/rm_s"] = time.time() - t

    # 4. RewardBench 2 and 1.
    _maybe_fail(cfg, "bench")
    t = time.time()
    say(f"RewardBench scoring: {len(rb2)} RB2 rows, {len(rb1)} RB1 pairs")
    bench_metrics, bench_artifacts = benchmark_stage(cfg, rm, rb2, rb1, out_dir)
    metrics |= bench_metrics
    artifacts += bench_artifacts
    timings["time/bench_s"] = time.time() - t

    # 5. Best-of-N with the policy's samples.
    policy_family = None
    if cfg.downstream.bon.enabled or cfg.downstream.ppo.enabled:
        policy_family = load_model_config(cfg.downstream.policy.model).family
    if cfg.downstream.bon.enabled:
        _maybe_fail(cfg, "bon")
        t = time.time()
        say(f"best-of-{cfg.downstream.bon.n_samples} with policy {cfg.downstream.policy.model}")
        bon_metrics, bon_artifacts = bon_stage(cfg, world, rm, cache, out_dir, show_bars)
        metrics |= bon_metrics
        artifacts += bon_artifacts
        timings["time/bon_s"] = time.time() - t

    # 6. PPO against the RM.
    if cfg.downstream.ppo.enabled:
        _maybe_fail(cfg, "ppo")
        from rmexp.ppo import ppo_stage  # imported here: most trials do not run PPO
        t = time.time()
        say(f"PPO for {cfg.downstream.ppo.steps} steps")
        ppo_metrics, ppo_history, ppo_artifacts = ppo_stage(cfg, world, rm, cache, out_dir, show_bars)
        metrics |= ppo_metrics
        history |= ppo_history
        artifacts += ppo_artifacts
        timings["time/ppo_s"] = time.time() - t

    timings["time/total_s"] = time.time() - start
    metrics |= timings
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    artifacts.append(out_dir / "metrics.json")
    say(f"done in {timings['time/total_s']:.1f} s: " + ", ".join(
        f"{k}={metrics[k]:.3f}" for k in ("eval/acc", "rb2/overall", "rb1/overall", "bon/gain_16", "ppo/gold")
        if k in metrics))
    params = trial_params(cfg, policy_family)
    for k in [k for k in metrics if k.startswith(LENGTH_BASELINE)]:
        params[k] = f"{metrics.pop(k):.4f}"
    return TrialResult(metrics=metrics, params=params, history=history, artifacts=artifacts, datasets=datasets)
