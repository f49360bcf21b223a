"""Build-and-score time and RewardBench 2 result of each RM kind on the tiny preset.

    python benchmarks/rm_kinds_tiny.py                       # every registered kind, preset=tiny (3000 pairs)
    python benchmarks/rm_kinds_tiny.py --kinds dpo judge -o rm.mode=generate data.size=1000
    python benchmarks/rm_kinds_tiny.py --kinds judge -o "rm.template='{prompt} {response} good ?'"   # Hydra quoting

Per kind: the config `preset=tiny rm=<kind>` composes (an `rm.*` override goes to the kinds whose conf/rm file
has that key; one that no chosen kind has is an error), a fresh cache (so trained kinds really train), the preset's base model (built once, timed apart),
the preset's preference rows and toy RewardBench 2 rows; `build` = train (or load) the scorer, `score` = score
every RB2 completion; rb2/overall by rmexp.bench, as a trial computes it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rmexp import bench, zoo  # noqa: E402
from rmexp import data as data_sources  # noqa: E402
from rmexp.config import CONF_DIR  # noqa: E402
from rmexp.rm import RM_KINDS, RMContext  # noqa: E402  (importing rmexp.rm registers every kind)
from rmexp.rm.options import rm_config  # noqa: E402
from rmexp.world.core import World  # noqa: E402


def has_key(kind: str, override: str) -> bool:
    """Whether the kind's conf/rm file has the `rm.*` key the override sets (a null default counts)."""
    missing = object()
    key = override.split("=", 1)[0].removeprefix("rm.")
    return OmegaConf.select(rm_config(kind), key, default=missing) is not missing


def compose_for(kind: str, overrides: list[str]):
    """`preset=tiny rm=<kind>` with the overrides; `rm.*` ones only where the kind's own config has the key."""
    kept = [o for o in overrides if not o.startswith("rm.") or has_key(kind, o)]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["preset=tiny", f"rm={kind}", *kept])


def rb2_overall(scorer, rb2: list[dict], batch_tokens: int) -> float:
    flat = [(i, c) for i, row in enumerate(rb2) for c in list(row["chosen"]) + list(row["rejected"])]
    scores = scorer.score([rb2[i]["prompt"] for i, _ in flat], [c for _, c in flat], batch_tokens)
    per_row, pos = [], 0
    for row in rb2:
        n_c, n_r = len(row["chosen"]), len(row["rejected"])
        per_row.append({"id": row["id"], "subset": row["subset"], "scores_chosen": scores[pos:pos + n_c].tolist(),
                        "scores_rejected": scores[pos + n_c:pos + n_c + n_r].tolist()})
        pos += n_c + n_r
    return bench.metric_dict(bench.score_rb2(per_row), "rb2")["rb2/overall"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=sorted(RM_KINDS), help=f"default: all, {sorted(RM_KINDS)}")
    parser.add_argument("-o", "--override", nargs="*", default=[], help="Hydra overrides, e.g. rm.beta=0.5 data.size=1000")
    parser.add_argument("--zoo-cache", default=".rmexp_cache", help="where the base model is built or found")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.kinds) - set(RM_KINDS))
    if unknown:
        parser.error(f"unknown RM kind(s) {unknown}; known: {sorted(RM_KINDS)}")
    if any(o.split("=", 1)[0] == "rm" for o in args.override):
        parser.error("choose kinds with --kinds, not an rm= override")
    unmatched = [o for o in args.override if o.startswith("rm.") and not any(has_key(k, o) for k in args.kinds)]
    if unmatched:
        parser.error(f"override(s) {unmatched} set a key none of the kinds {args.kinds} has")
    torch.set_num_threads(1)
    world = World(0)
    cfgs = {kind: compose_for(kind, args.override) for kind in args.kinds}
    cfg = cfgs[args.kinds[0]]  # the base, the rows and the benchmark do not depend on the kind
    start = time.time()
    base = zoo.model_path(cfg.model, world, args.zoo_cache, progress=False)
    prefs = data_sources.preference_rows(cfg, world)
    rb2, _ = data_sources.benchmark_rows(cfg, world)
    print(f"base {cfg.model.name} ready in {time.time() - start:.1f} s; {len(prefs)} pairs, {len(rb2)} RB2 rows; "
          f"torch threads 1", flush=True)
    print(f"{'kind':<11} {'build s':>8} {'score s':>8} {'rb2/overall':>12} {'eval/acc':>9}  other metrics")
    for kind in args.kinds:
        with tempfile.TemporaryDirectory() as cache:
            ctx = RMContext(cfgs[kind], world, base, prefs, Path(cache), progress=False)
            t0 = time.time()
            scorer = RM_KINDS[kind].build(ctx)
            t1 = time.time()
            overall = rb2_overall(scorer, rb2, cfg.benchmark.score_batch_tokens)
            t2 = time.time()
            metrics = scorer.describe()["metrics"]
        other = ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items())
                          if k.startswith(("judge/", "eval/step_acc", "eval/acc_reference_free")))
        print(f"{kind:<11} {t1 - t0:>8.1f} {t2 - t1:>8.1f} {overall:>12.3f} {metrics.get('eval/acc', float('nan')):>9.3f}  {other}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
