"""Calibrate the toy world as an instrument: train the RMs of a sweep without Ray or MLflow and print the
per-domain RewardBench 2 table (model x domain, overall, best-of-N gain), plus wall time per RM.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/world_calibration.py                      # the base-model sweep
    PYTHONPATH=$PWD .venv/bin/python benchmarks/world_calibration.py --models toy_llama_s random_llama_s \
        --cache-dir /tmp/wcal --no-bon --threads 1 -- data.size=4000
    PYTHONPATH=$PWD .venv/bin/python benchmarks/world_calibration.py --parent 6e56ca71   # a sweep's seeds, from MLflow

Each model runs `rmexp.trial.run_trial` in this process, one after another, with `--threads` torch threads
(the sweep gives one thread to a trial); `--cache-dir` defaults to a fresh temp dir, so the times are cold
(zoo builds included, the BoN policy's build and sampling counted in the first trial that needs them).
Trailing arguments after `--` are Hydra overrides applied to every trial. To use more cores, run several
processes on one `--cache-dir` with disjoint `--models` and `--json` files (as a sweep runs trials in
parallel), then print the joint table with `--from-json A.json B.json ...`. The checks at the end are the
world's calibration targets (DESIGN.md, "Toy world"): every non-Ties domain has its best RM >= 0.25 above
chance, no domain has every RM >= 0.95, and pretrained bases beat random-init ones on Factuality and Math.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rmexp.config import CONF_DIR, validate  # noqa: E402
from rmexp.trial import run_trial  # noqa: E402

COLUMNS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties", "overall")
CHANCE = 0.25  # RB2 non-Ties: 1 chosen among 4 completions
MARGIN = 0.25  # a domain's best RM must beat chance by this much


def sweep_models(name: str) -> list[str]:
    cfg = OmegaConf.load(CONF_DIR / "sweep" / f"{name}.yaml")
    return list(cfg.sweep.axes.model)


def compose_trial(model: str, overrides: list[str], cache_dir: str, bon: bool):
    ovs = [f"model={model}", f"cache_dir={cache_dir}", *overrides]
    if not bon:
        ovs.append("downstream.bon.enabled=false")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=ovs)
    validate(cfg)
    return cfg


def matched_pairs(names) -> list[tuple[str, str]]:
    """(pretrained, random-init) pairs of the same shape among `names` (toy_llama_s with random_llama_s)."""
    names = set(names)
    return sorted((n, "random_" + n[len("toy_"):]) for n in names if n.startswith("toy_") and "random_" + n[len("toy_"):] in names)


def t_interval(values) -> tuple[float, float, float]:
    """Mean of `values` and its 95% t interval (n - 1 df)."""
    import numpy as np
    from scipy import stats as sst

    v = np.asarray(values, dtype=float)
    half = float(sst.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


def checks(rows: dict[str, dict[str, float]]) -> list[str]:
    """The calibration targets, one line each, PASS or FAIL."""
    out = []
    for d in COLUMNS[:-1]:
        values = [m[f"rb2/{d}"] for m in rows.values()]
        if d != "Ties":
            ok = max(values) >= CHANCE + MARGIN
            out.append(f"{'PASS' if ok else 'FAIL'} {d}: best {max(values):.3f} >= {CHANCE + MARGIN:.2f}")
        ok = min(values) < 0.95
        out.append(f"{'PASS' if ok else 'FAIL'} {d}: not saturated (min {min(values):.3f} < 0.95)")
    pre = {n: m for n, m in rows.items() if not n.startswith("random_")}
    rnd = {n: m for n, m in rows.items() if n.startswith("random_")}
    for d in ("Factuality", "Math"):
        if pre and rnd:
            # Same-shape pairs where both exist (random_llama_s vs toy_llama_s), else best-vs-best.
            pairs = [(n.replace("random_", "toy_"), n) for n in rnd if n.replace("random_", "toy_") in pre]
            for p, r in pairs:
                gap = pre[p][f"rb2/{d}"] - rnd[r][f"rb2/{d}"]
                out.append(f"{'PASS' if gap > 0 else 'FAIL'} {d}: {p} - {r} = {gap:+.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="world_calibration.py", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="conf/model entries (default: the sweep's)")
    parser.add_argument("--sweep", default="base_models", help="conf/sweep entry whose model axis to run")
    parser.add_argument("--cache-dir", default=None, help="cache (default: a fresh temp dir, so times are cold)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a sweep trial gets 1)")
    parser.add_argument("--no-bon", action="store_true", help="skip best-of-N (RB2/RB1 only)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from a file path (tests)
    from world_transfer_probe import CORPUS_VARIANTS  # here, not at the top: the probe imports this module

    parser.add_argument("--corpus", default="base", choices=CORPUS_VARIANTS,
                        help="pretraining corpus of every base: the world's, or a variant of "
                             "world_transfer_probe.py (a candidate world; needs a cache of its own)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write {model: metrics} as JSON")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="PATH",
                        help="print the table and checks of earlier --json files (runs nothing)")
    parser.add_argument("--seeds", nargs="+", action="append", default=None, metavar="PATH",
                        help="one seed's --json files (repeat the flag per seed): per-config means over the seeds and "
                             "the replicate statistics (runs nothing)")
    parser.add_argument("--parent", default=None, metavar="RUN_ID",
                        help="the replicate statistics of a sweep's FINISHED trials in MLflow, by `seed` (the parent "
                             "run id or its first 8 characters; runs nothing)")
    parser.add_argument("--experiment", default="base_models", help="with --parent: the sweep's MLflow experiment")
    parser.add_argument("--by", default="seed", help="with --parent: the param that tells replicates apart "
                                                      "(base_draws: model.seed)")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}", help="with --parent")
    args = parser.parse_args(argv)
    if args.parent:
        from mlflow.tracking import MlflowClient

        from base_draw_noise import finished_children

        by_model = finished_children(MlflowClient(args.tracking_uri), args.experiment, args.parent, args.by)
        print_replicates([{m: runs[k] for m, runs in by_model.items() if k in runs}
                          for k in sorted({k for runs in by_model.values() for k in runs})])
        return 0
    if args.seeds:
        print_replicates([{m: r for path in paths for m, r in json.loads(Path(path).read_text()).items()}
                          for paths in args.seeds])
        return 0
    if args.from_json:
        rows = {}
        for path in args.from_json:
            rows |= json.loads(Path(path).read_text())
        print_table(rows)
        return 0
    torch.set_num_threads(args.threads)
    models = args.models or sweep_models(args.sweep)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="rmexp_wcal_")
    marker = Path(cache) / "corpus.txt"  # the zoo's cache key does not know a corpus variant: one per cache
    if marker.exists() and marker.read_text() != args.corpus:
        print(f"error: cache {cache} holds bases of corpus {marker.read_text()!r}, not {args.corpus!r}", file=sys.stderr)
        return 2
    Path(cache).mkdir(parents=True, exist_ok=True)
    marker.write_text(args.corpus)
    if args.corpus != "base":
        from world_transfer_probe import install_corpus_variant
        install_corpus_variant(args.corpus)
    try:
        configs = {m: compose_trial(m, overrides, cache, not args.no_bon) for m in models}
    except Exception as err:  # noqa: BLE001 - a config error, reported before any work starts
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    rows: dict[str, dict[str, float]] = {}
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="rmexp_wcal_out_") as out:
        for m, cfg in configs.items():
            t, cpu = time.time(), time.process_time()
            res = run_trial(cfg, Path(out) / m, progress=lambda msg: None)
            rows[m] = res.metrics | {"wall_s": time.time() - t, "cpu_s": time.process_time() - cpu}
            print(f"{m}: {rows[m]['wall_s']:.1f} s wall, {rows[m]['cpu_s']:.1f} s CPU  " + "  ".join(
                f"{c}={rows[m][f'rb2/{c}']:.3f}" for c in COLUMNS), flush=True)
    total = time.time() - start
    print_table(rows)
    print(f"{len(rows)} RMs in {total:.0f} s wall ({args.threads} thread(s), cache {cache})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, sort_keys=True))
    return 0


def print_table(rows: dict[str, dict[str, float]]) -> None:
    head = f"| model | {' | '.join(COLUMNS)} | bon/gain_16 | eval/acc | wall s | CPU s |"
    print("\n" + head + "\n|" + "---|" * (len(COLUMNS) + 5))
    for m, r in rows.items():
        bon = f"{r['bon/gain_16']:.3f}" if "bon/gain_16" in r else "-"
        print(f"| {m} | " + " | ".join(f"{r[f'rb2/{c}']:.3f}" for c in COLUMNS)
              + f" | {bon} | {r['eval/acc']:.3f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")
    cpu_total = sum(r["cpu_s"] for r in rows.values())
    print(f"\n{len(rows)} RMs: {cpu_total:.0f} s CPU in all (on a loaded machine the CPU time is the better "
          "estimate of the idle wall time)")
    print("\n".join(checks(rows)))


def replicate_summary(seeds: list[dict[str, dict[str, float]]]) -> dict:
    """Statistics over seed replicates of the same configs (each dict: one seed's {model: metrics}; models in every
    seed only): per metric the one-way ANOVA of `rmexp.stats.icc1` and the ratio seed SD / between-config SD with a
    95% interval from the F distribution (sigma_b^2 / sigma_w^2 in [(F / F_hi - 1) / k0, (F / F_lo - 1) / k0]); per
    domain of the transfer check the pretrained - random-init difference of config means over matched shapes with a
    t interval; RB2 overall vs BoN gain over config means, Pearson r with its Fisher z interval."""
    import math

    import numpy as np
    from scipy import stats as sst

    from rmexp.stats import icc1

    models = sorted(set.intersection(*(set(s) for s in seeds)))
    out: dict = {"models": models, "seeds": len(seeds), "reliability": {}, "transfer": {}}
    for metric in ("rb2/overall", "bon/gain_16", *(f"rb2/{c}" for c in COLUMNS[:-1])):
        if not all(metric in s[m] for s in seeds for m in models):
            continue
        o = icc1([[s[m][metric] for s in seeds] for m in models])
        d1, d2 = len(models) - 1, len(models) * (len(seeds) - 1)
        f = o["msb"] / o["msw"] if o["msw"] > 0 else math.inf

        def ratio(var_ratio: float) -> float:  # seed SD / between SD from sigma_b^2 / sigma_w^2
            return 1 / math.sqrt(var_ratio) if var_ratio > 0 else math.inf
        lo_var = (f / sst.f.ppf(0.975, d1, d2) - 1) / o["k0"]
        hi_var = (f / sst.f.ppf(0.025, d1, d2) - 1) / o["k0"]
        out["reliability"][metric] = {**o, "ratio": o["seed_sd"] / o["between_sd"] if o["between_sd"] > 0 else math.inf,
                                      "ratio_lo": ratio(hi_var), "ratio_hi": ratio(lo_var), "df": (d1, d2)}
    means = {m: {k: float(np.mean([s[m][k] for s in seeds])) for k in seeds[0][m] if all(k in s[m] for s in seeds)}
             for m in models}
    pairs = matched_pairs(models)
    for d in ("Factuality", "Math"):
        if len(pairs) >= 2:
            diff, lo, hi = t_interval([means[p][f"rb2/{d}"] - means[r][f"rb2/{d}"] for p, r in pairs])
            out["transfer"][d] = {"n": len(pairs), "diff": diff, "lo": lo, "hi": hi}
        # each pair on its own, paired by seed (its seed noise only, not its base's build)
        out.setdefault("per_pair", {})[d] = {(p, r): t_interval([s[p][f"rb2/{d}"] - s[r][f"rb2/{d}"] for s in seeds])
                                             for p, r in pairs} if len(seeds) >= 2 else {}
    out["best"] = {c: max((means[m][f"rb2/{c}"], m) for m in models) for c in COLUMNS[:-1]}
    if len(models) > 3 and all("bon/gain_16" in means[m] for m in models):
        r = float(np.corrcoef([means[m]["rb2/overall"] for m in models], [means[m]["bon/gain_16"] for m in models])[0, 1])
        z, half = math.atanh(r), 1.959964 / math.sqrt(len(models) - 3)
        out["rb2_vs_bon"] = {"r": r, "lo": math.tanh(z - half), "hi": math.tanh(z + half), "n": len(models)}
    return out


def print_replicates(seeds: list[dict[str, dict[str, float]]]) -> None:
    rep = replicate_summary(seeds)
    print(f"{len(rep['models'])} configs x {rep['seeds']} seeds")
    for metric, o in rep["reliability"].items():
        print(f"{metric}: seed SD {o['seed_sd']:.3f}, between-config SD {o['between_sd']:.3f}, ratio {o['ratio']:.2f} "
              f"[{o['ratio_lo']:.2f}, {o['ratio_hi']:.2f}] (F, {o['df'][0]} and {o['df'][1]} df), ICC(1) {o['icc1']:.2f}")
    for d, t in rep["transfer"].items():
        print(f"pretrained - random-init, RB2 {d}: {t['diff']:+.3f} [{t['lo']:+.3f}, {t['hi']:+.3f}] ({t['n']} pairs, t)")
        print("  per pair, paired by seed (t): " + ", ".join(
            f"{p[len('toy_'):]} {m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for (p, _), (m, lo, hi) in rep["per_pair"][d].items()))
    print("best config per domain: " + ", ".join(f"{c} {v:.3f} ({m})" for c, (v, m) in rep["best"].items()))
    if "rb2_vs_bon" in rep:
        c = rep["rb2_vs_bon"]
        print(f"RB2 overall vs BoN gain_16 over config means: r {c['r']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] "
              f"(Fisher z, n {c['n']})")


if __name__ == "__main__":
    raise SystemExit(main())
