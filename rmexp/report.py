"""Regenerate docs/results.md from MLflow: every study's verdicts, correlations, reliability, tables and figures.

    python -m rmexp.report                       # read the latest run of every study's sweep, write docs/results.md
    python -m rmexp.report --run                 # run each study's sweep first (`python -m rmexp +sweep=<name>`)
    python -m rmexp.report --studies base_models epochs --out docs/results.md --tracking-uri sqlite:///...

Every number in docs/results.md comes from the MLflow store named in its header; the file says when and by
which command it was written. A study whose sweep has not run is listed with the command that runs it. README
and sweeps/README.md point here instead of copying numbers.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rmexp import replicates as R
from rmexp import tracking as T
from rmexp.bench import RB2_SUBSETS

REPO = Path(__file__).resolve().parent.parent
HEADLINE_COLUMNS = ("eval/acc", "rb2/overall", "rb1/overall", "bon/gain_16", "bon/gain_64", "ppo/gold_delta", "ppo/kl")
HEADLINE_PAIRS = (("rb2/overall", "bon/gain_16"), ("rb1/overall", "bon/gain_16"), ("rb2/overall", "ppo/gold_delta"))


def _f(v, nd: int = 3) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if not math.isfinite(v) else f"{v:.{nd}f}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _sweep_wall(parent_run) -> str:
    info = parent_run.info if parent_run is not None else None
    if info is None or not info.end_time or not info.start_time:
        return "?"
    s = (info.end_time - info.start_time) / 1000
    return f"{int(s // 60)} min {int(s % 60)} s"


def _sweep_command(parent_run, default: str) -> str:
    """The command the sweep ran with (the parent run's `rmexp.command` tag, e.g. with `sweep.replicates=2`),
    less its `tracking.uri=` (the store is named in the header); the study's own command when there is no tag."""
    tag = parent_run.data.tags.get(T.COMMAND_TAG) if parent_run is not None else None
    if not tag:
        return default
    return " ".join(w for w in shlex.split(tag) if not w.startswith("tracking.uri="))


def config_table(trials: pd.DataFrame, columns: Sequence[str] = HEADLINE_COLUMNS) -> str:
    """Per config: the params that vary (seed aside), replicates, and each of ``columns`` present as the replicate
    mean ± its SE (seed SD / sqrt(k) with replicates; else the trial's own `<metric>_se` where logged)."""
    means = R.config_means(trials)
    keys = R.config_keys(trials)
    varying = [c for c in R.config_columns(trials) if trials[c].astype(str).nunique() > 1]
    metrics = [m for m in columns if m in trials.columns]
    head = [c.removeprefix("param:") for c in varying] + ["seeds"] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, k in enumerate(dict.fromkeys(keys)):
        sel = trials[keys == k]
        cells = [_md_cell(means.iloc[i][c]) for c in varying] + [str(len(sel))]
        for m in metrics:
            v = pd.to_numeric(sel[m], errors="coerce").dropna().to_numpy()
            if v.size == 0:
                cells.append("")
                continue
            if v.size >= 2:
                se = v.std(ddof=1) / math.sqrt(v.size)
            elif f"{m}_se" in sel.columns:
                se = float(pd.to_numeric(sel[f"{m}_se"], errors="coerce").iloc[0])
            else:
                se = math.nan
            cells.append(_f(v.mean()) + (f" ± {_f(se)}" if math.isfinite(se) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(results) -> str:
    lines = ["| check | paper says | measured | n | CI method | verdict |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {_md_cell(r.name)} | {_md_cell(r.paper)} | {_md_cell(r.measured())} | {r.n} | "
                     f"{_md_cell(r.ci_method or '-')} | **{r.verdict}** |")
    return "\n".join(lines)


def study_section(study, trials: pd.DataFrame, out_dir: Path, n_boot: int, seed: int, client=None) -> str:
    """The markdown section of one study (figures written under ``out_dir / 'figures'``)."""
    from rmexp.analyze import scatter_plot
    from rmexp.study import VERDICTS, evaluate

    results = evaluate(study, trials, n_boot=n_boot, seed=seed)
    keys = R.config_keys(trials)
    n_configs = len(set(keys))
    parent = trials.attrs.get("parent_run_id")
    counts = ", ".join(f"{sum(r.verdict == v for r in results)} {v}" for v in VERDICTS)
    parent_run = client.get_run(parent) if client is not None and parent else None
    out = [f"## {study.sweep}", "",
           f"`{_sweep_command(parent_run, study.command)}` — parent run `{parent}`, {len(trials)} finished trials, "
           f"{n_configs} configs, sweep wall time {_sweep_wall(parent_run)}.", "",
           f"Paper: {study.paper}", "", f"Finding: {study.finding}", "", f"Verdicts: {counts}.", "",
           verdict_table(results), "", "Per config (mean ± SE):", "", config_table(trials), ""]
    domains = [f"rb2/{d}" for d in RB2_SUBSETS if f"rb2/{d}" in trials.columns]
    if domains:  # is every domain an instrument? (chance: 0.25 for 1 chosen vs 3 rejected; Ties is scored otherwise)
        out += ["RewardBench 2 per domain (mean ± SE; chance 0.25 except Ties):", "",
                config_table(trials, domains), ""]
    pairs = [(b, d) for b, d in HEADLINE_PAIRS if b in trials.columns and d in trials.columns]
    rows = [R.correlate_two_level(trials, b, d, "pearson", n_boot=n_boot, seed=seed) for b, d in pairs]
    rows = [r for r in rows if r["n"] >= 3]
    if rows:
        out += ["Headline correlations over config means:", "", R.format_correlations(rows), ""]
    rel = R.reliability_table(trials)
    if len(rel) and np.isfinite(rel["icc1"].to_numpy(dtype=float)).any():
        out += ["Reliability (ICC(1): share of a trial's variance between configs rather than seeds):", "",
                R.format_reliability(rel), ""]
    figures = []
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    means = R.config_means(trials)
    for (b, d), row in zip(pairs, rows):
        if b == "rb2/overall":
            ci = {"pearson": row["r"], "pearson_lo": row["boot_lo"], "pearson_hi": row["boot_hi"], "spearman": math.nan,
                  "n": row["n"]}
            path = fig_dir / f"{study.sweep}__{b.replace('/', '_')}__{d.replace('/', '_')}.png"
            label = "param:model" if "param:model" in means.columns else None
            figures.append(Path(scatter_plot(means, b, d, ci, path, label_column=label)))
    if study.sweep == "overoptimization":
        from rmexp.overopt import plot_overoptimization

        hist = _ppo_histories(client, trials) if client is not None else {}
        figures.append(plot_overoptimization(trials, fig_dir / "overoptimization.png", hist))
    if figures:
        out += ["Figures: " + ", ".join(f"[{p.name}](figures/{p.name})" for p in figures), ""]
    return "\n".join(out)


def _ppo_histories(client, trials: pd.DataFrame) -> dict:
    out = {}
    for run_id in trials.get("run_id", []):
        out[run_id] = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
                       for k in ("ppo/kl", "ppo/gold", "ppo/proxy")}
    return out


def build_report(study_paths: Sequence[Path], tracking_uri: str, out: Path, n_boot: int = 2000, seed: int = 0,
                 run: bool = False, command: str = "python -m rmexp.report") -> str:
    """Write ``out`` (markdown) from the latest sweep of every study; returns the text."""
    from rmexp.analyze import AnalyzeError, _client, load_trials
    from rmexp.study import load_study

    studies = [load_study(p) for p in study_paths]  # every file validated before anything runs
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections, missing = [], []
    for study in studies:
        if run:
            cmd = shlex.split(study.command) + [f"tracking.uri={tracking_uri}"]
            cmd[0] = sys.executable if cmd[0] == "python" else cmd[0]
            print(f"[report] running {' '.join(cmd)}", flush=True)
            subprocess.run(cmd, check=False)
        try:
            trials = load_trials(study.sweep, tracking_uri)
        except AnalyzeError as e:
            missing.append(f"- `{study.sweep}`: not run ({_display_uri(str(e))}); run `{study.command}`")
            continue
        if trials.empty:
            missing.append(f"- `{study.sweep}`: no finished trials; run `{study.command}`")
            continue
        print(f"[report] {study.sweep}: {len(trials)} trials", flush=True)
        sections.append(study_section(study, trials, out.parent, n_boot, seed, _client(tracking_uri)))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ["# Results", "",
            f"Generated {now} by `{command}` from the MLflow store `{_display_uri(tracking_uri)}`; every number below "
            "comes from it (the latest sweep run of each study). Do not edit by hand: rerun the command.", "",
            "Intervals are 95%. Verdicts: *agrees* / *disagrees* need the interval(s) to exclude 0 with >= 3 "
            "matched pairs or configs (or seed replicates inside every pair); fewer give *inconclusive (n too "
            "small)*. Correlations are over config means (seed replicates averaged) with a two-stage bootstrap "
            "(configs, then seeds) and a Fisher-z interval; SEs are across seeds where a config has replicates, "
            "else the trial's own (`rb2/overall_se`: binomial per subset; `bon/gain_16_se`: over prompts).", ""]
    if missing:
        head += ["Not in this store:", ""] + missing + [""]
    text = "\n".join(head + sections).rstrip() + "\n"
    out.write_text(text)
    return text


def _display_uri(uri: str) -> str:
    """The URI with the repository's absolute path shortened to ``<repo>`` (the file is committed)."""
    return uri.replace(str(REPO), "<repo>")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rmexp.report", description=__doc__.splitlines()[0])
    ap.add_argument("--studies", nargs="*", default=None,
                    help="study names or files (default: every sweeps/*.yaml but smoke)")
    ap.add_argument("--out", default=str(REPO / "docs" / "results.md"))
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///<abs cwd>/mlflow.db")
    ap.add_argument("--run", action="store_true", help="run each study's sweep first (cached trials are reused)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from rmexp.study import StudyError, resolve_study_path
    from rmexp.tracking import default_tracking_uri

    if args.studies:
        paths = [resolve_study_path(s) for s in args.studies]
    else:
        paths = [p for p in sorted((REPO / "sweeps").glob("*.yaml")) if p.stem != "smoke"]
    uri = args.tracking_uri or default_tracking_uri()
    command = "python -m rmexp.report" + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    try:
        build_report(paths, uri, Path(args.out), args.n_boot, args.seed, args.run, _display_uri(command))
    except StudyError as e:
        print(f"rmexp.report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
