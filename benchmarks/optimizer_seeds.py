"""Plain vs fused AdamW on the default RM, over seeds: is a gap in eval/acc a defect or seed variance?

    nice -n 10 python benchmarks/optimizer_seeds.py --seeds 0 1 2 3 [--json out.json] [hydra overrides ...]

Trains the default config's RM (`python -m rmexp`'s model, data and train settings; downstream stages are not
run) once per (seed, optimizer), with `train.seed` = seed, and prints eval/acc for each run, the mean and SD
per optimizer, the paired differences (same seed, same batches, same init), Welch's t on the two samples and a
bootstrap 95% CI of the mean difference. The last line holds the `ratio` of the mean accuracies.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's t statistic and its Welch-Satterthwaite degrees of freedom."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / np.sqrt(va + vb) if va + vb > 0 else 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else float("inf")
    return float(t), float(df)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of mean(a) - mean(b), resampling each group independently."""
    rng = np.random.default_rng(seed)
    diffs = rng.choice(a, (n, len(a))).mean(1) - rng.choice(b, (n, len(b))).mean(1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def train_once(cfg, base, prefs, fused: bool, out: Path) -> dict:
    # train_reward_model looks make_optimizer up in its own module, rmexp.rm.classifier (not the package's
    # re-export): the switch goes there.
    from rmexp.rm import classifier

    original = classifier.make_optimizer
    classifier.make_optimizer = functools.partial(original, fused=fused)
    try:
        return classifier.train_reward_model(base, prefs, cfg, out, progress=False).info["metrics"]
    finally:
        classifier.make_optimizer = original


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=".rmexp_cache")
    p.add_argument("--json", type=Path)
    p.add_argument("overrides", nargs="*", help="hydra overrides of the default config (e.g. data.size=2000)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from hydra import compose, initialize_config_dir

    from rmexp import zoo
    from rmexp import data as data_sources
    from rmexp.config import CONF_DIR
    from rmexp.world.core import World

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=a.overrides)
    world = World(cfg.world.seed)
    base = zoo.model_path(cfg.model, world, a.cache_dir, progress=False)
    prefs = data_sources.preference_rows(cfg, world)
    runs = []
    with tempfile.TemporaryDirectory(prefix="optimizer_seeds_") as tmp:
        for seed in a.seeds:
            for fused in (False, True):
                cfg.train.seed = seed
                t0 = time.time()
                m = train_once(cfg, base, prefs, fused, Path(tmp) / f"rm-{seed}-{fused}")
                runs.append({"seed": seed, "optimizer": "fused" if fused else "plain", "eval/acc": m["eval/acc"],
                             "train/loss": m["train/loss"], "seconds": time.time() - t0})
                print(f"seed {seed} {runs[-1]['optimizer']:5s} eval/acc {m['eval/acc']:.4f} "
                      f"train/loss {m['train/loss']:.4f} ({runs[-1]['seconds']:.0f} s)", flush=True)
    plain = np.array([r["eval/acc"] for r in runs if r["optimizer"] == "plain"])
    fused = np.array([r["eval/acc"] for r in runs if r["optimizer"] == "fused"])
    t, df = welch_t(fused, plain)
    lo, hi = bootstrap_ci(fused, plain)
    paired = fused - plain
    summary = {"n_seeds": len(a.seeds), "plain_mean": plain.mean(), "plain_sd": plain.std(ddof=1),
               "fused_mean": fused.mean(), "fused_sd": fused.std(ddof=1), "welch_t": t, "welch_df": df,
               "diff_mean": paired.mean(), "bootstrap_ci95": [lo, hi], "paired_diff_sd": paired.std(ddof=1),
               "ratio": fused.mean() / plain.mean()}
    print(f"plain AdamW eval/acc: mean {plain.mean():.4f} SD {plain.std(ddof=1):.4f}  ({', '.join(f'{x:.3f}' for x in plain)})")
    print(f"fused AdamW eval/acc: mean {fused.mean():.4f} SD {fused.std(ddof=1):.4f}  ({', '.join(f'{x:.3f}' for x in fused)})")
    print(f"fused - plain: mean {paired.mean():+.4f}, paired SD {paired.std(ddof=1):.4f}, Welch t {t:+.2f} "
          f"(df {df:.1f}), bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}]")
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "summary": summary, "overrides": a.overrides}, indent=1))
    print(f"ratio fused/plain mean eval/acc {summary['ratio']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
