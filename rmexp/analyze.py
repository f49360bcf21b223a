"""Benchmark-vs-downstream correlation analysis over a sweep's MLflow runs.

A sweep is an MLflow parent run with one nested child run per trial. Each trial logs benchmark metrics
(``rb2/...``, ``rb1/...``, ``eval/acc``) and downstream metrics (``bon/...``, ``ppo/...``). This module asks
whether better benchmark scores go with better downstream results: for every (benchmark, downstream) pair it
computes n, Pearson r and Spearman rho with percentile-bootstrap confidence intervals, prints a table, and logs
``corr/pearson/<bench>__<downstream>`` / ``corr/spearman/...`` metrics, the table and headline scatter plots
onto the parent run.

Two levels (:mod:`rmexp.replicates`): trials that differ only in ``seed`` are replicates of one config, and the
correlations run over config means. For the headline pairs it also prints replicate-aware intervals (two-stage
bootstrap over configs then seeds, and Fisher z) and every headline metric's reliability (ICC(1)).

CLI::

    python -m rmexp.analyze --experiment NAME [--tracking-uri URI] [--parent-run-id ID]
                            [--n-boot N] [--seed S] [--no-log]

Longer than the usual module on purpose: the correlation maths, the MLflow reading and the CLI that joins them
are one user-facing step (`python -m rmexp.analyze`); the replicate-aware parts live in rmexp/replicates.py.
"""

from __future__ import annotations

import argparse
import re
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from rmexp.downstream import DOWNSTREAM, headline_metrics, is_outcome, is_rm_outcome, method_of
from rmexp.replicates import (config_means, correlate_two_level, format_correlations, format_reliability,
                              reliability_table)
from rmexp.tracking import TRIAL_KEY_TAG, default_tracking_uri, search_all_runs, sqlite_path

BENCHMARK_PREFIXES = ("rb2/", "rb1/")
BENCHMARK_EXACT = ("eval/acc",)
# Downstream prefixes and outcomes come from the registry of downstream methods (rmexp/downstream/).
DOWNSTREAM_PREFIXES = tuple(m.prefix for m in DOWNSTREAM.values())

#: Columns of the table returned by :func:`correlate` (``n_boot_valid`` is the number of bootstrap resamples
#: that were usable, i.e. where neither column was constant).
CORR_COLUMNS = [
    "bench",
    "downstream",
    "n",
    "pearson",
    "pearson_lo",
    "pearson_hi",
    "spearman",
    "spearman_lo",
    "spearman_hi",
    "n_boot_valid",
]

#: A bootstrap CI is reported only when at least this fraction of the resamples was usable.
MIN_VALID_BOOT_FRACTION = 0.5

#: Overall benchmark scores, paired first with each downstream method's headline outcomes (rmexp/downstream/).
HEADLINE_BENCH = ("rb2/overall", "rb1/overall", "eval/acc")

PARENT_TAG = "mlflow.parentRunId"


class AnalyzeError(RuntimeError):
    """A user-facing error (missing experiment, no finished trials, ...)."""


# --------------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """Metric name -> MLflow-key-safe fragment: '/', ' ' and '@' become '_' (``rb2/Precise IF`` -> ``rb2_Precise_IF``)."""
    return str(name).replace("/", "_").replace(" ", "_").replace("@", "_")


def corr_key(method: str, bench: str, downstream: str) -> str:
    """``corr_key("pearson", "rb2/overall", "bon/gain_16") == "corr/pearson/rb2_overall__bon_gain_16"``."""
    return f"corr/{method}/{slug(bench)}__{slug(downstream)}"


#: Standard errors logged next to a metric (``rb2/overall_se``, ``bon/gain_16_se``) describe it; they are not
#: scores to correlate.
STANDARD_ERROR = re.compile(r"_se$")


def is_benchmark_metric(name: str) -> bool:
    name = str(name)
    return (name.startswith(BENCHMARK_PREFIXES) or name in BENCHMARK_EXACT) and not STANDARD_ERROR.search(name)


def is_downstream_metric(name: str) -> bool:
    """An RM outcome of a downstream method (its `outcomes`): what the correlations pair with benchmarks. Times,
    diagnostics (``ppo/kl_coef``, ``bon/oracle_16``) and the metrics of methods that do not use the RM (a
    reference line such as RLVR) only add noise and comparisons."""
    return is_rm_outcome(name)


def is_reference_metric(name: str) -> bool:
    """An outcome of a method that does not use the RM (``uses_rm=False``): shown beside, never correlated."""
    m = method_of(name)
    return m is not None and not m.uses_rm and is_outcome(name)


# --------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------


def _is_constant(v: np.ndarray) -> bool:
    return v.size == 0 or bool(np.all(v == v[0]))


def _point_estimates(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and Spearman rho via scipy; NaN (silently) for n < 3 or a constant column."""
    if x.size < 3 or _is_constant(x) or _is_constant(y):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. NearConstantInputWarning
        r = float(scipy.stats.pearsonr(x, y)[0])
        rho = float(scipy.stats.spearmanr(x, y)[0])
    return r, rho


def _standardize_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise centred and unit-norm rows (so a row dot product is Pearson r), plus a mask of constant rows."""
    const = np.ptp(m, axis=1) == 0  # exact: float variance of identical values may be a tiny non-zero
    c = m - m.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", c, c))
    norm[const] = 1.0
    return c / norm[:, None], const


class _Bootstrap:
    """Resample indices per sample size (each drawn from ``default_rng(seed)``, so a pair's CI does not depend on
    which other pairs are analysed) and cached standardised resamples per (column, row mask)."""

    def __init__(self, n_boot: int, seed: int):
        self.n_boot = int(n_boot)
        self.seed = seed
        self._idx: dict[int, np.ndarray] = {}
        self._cols: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def indices(self, n: int) -> np.ndarray:
        if n not in self._idx:
            rng = np.random.default_rng(self.seed)
            self._idx[n] = rng.integers(0, n, size=(self.n_boot, n))
        return self._idx[n]

    def column(self, key: tuple, values: np.ndarray):
        """(pearson-standardised resamples, spearman-standardised resamples, constant-row mask)."""
        hit = self._cols.get(key)
        if hit is None:
            m = values[self.indices(values.size)]
            zp, const = _standardize_rows(m)
            zs, _ = _standardize_rows(scipy.stats.rankdata(m, axis=1))
            hit = (zp, zs, const)
            self._cols[key] = hit
        return hit

    def drop(self, name: str) -> None:
        for k in [k for k in self._cols if k[0] == name]:
            del self._cols[k]


def _percentile_ci(samples: np.ndarray, ci: float) -> tuple[float, float]:
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def correlate(
    table: pd.DataFrame,
    bench_metrics: Sequence[str] | None = None,
    downstream_metrics: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Pearson and Spearman correlation with percentile-bootstrap CIs for every (bench, downstream) pair.

    ``table`` has one row per trial and one column per metric. Defaults: every column for which
    :func:`is_benchmark_metric` / :func:`is_downstream_metric` holds. Per pair, rows where either value is NaN are
    dropped. r is NaN (no exception, no warning) for n < 3 or a constant column. The bootstrap resamples trials
    with replacement (``numpy.random.default_rng(seed)``), skips resamples where either column is constant (their
    count is ``n_boot - n_boot_valid``) and gives NaN bounds when fewer than ``MIN_VALID_BOOT_FRACTION`` of the
    resamples are usable. Returns a DataFrame with :data:`CORR_COLUMNS`, rows in bench-major order.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    cols = [str(c) for c in table.columns]
    if bench_metrics is None:
        bench_metrics = [c for c in cols if is_benchmark_metric(c)]
    if downstream_metrics is None:
        downstream_metrics = [c for c in cols if is_downstream_metric(c)]
    missing = [m for m in list(bench_metrics) + list(downstream_metrics) if m not in table.columns]
    if missing:
        raise KeyError(f"metrics not in table: {missing}")

    def numeric(name: str) -> np.ndarray:
        return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)

    data = {name: numeric(name) for name in dict.fromkeys(list(bench_metrics) + list(downstream_metrics))}
    boot = _Bootstrap(n_boot, seed) if n_boot and n_boot > 0 else None
    min_valid = max(2, math.ceil(MIN_VALID_BOOT_FRACTION * n_boot)) if boot else 0

    rows = []
    for b in bench_metrics:
        xb_all = data[b]
        for d in downstream_metrics:
            yd_all = data[d]
            mask = np.isfinite(xb_all) & np.isfinite(yd_all)
            x, y = xb_all[mask], yd_all[mask]
            n = int(x.size)
            r, rho = _point_estimates(x, y)
            p_lo = p_hi = s_lo = s_hi = math.nan
            n_valid = 0
            if boot is not None and not math.isnan(r):
                mkey = mask.tobytes()
                zpx, zsx, cx = boot.column((b, mkey), x)
                zpy, zsy, cy = boot.column((d, mkey), y)
                valid = ~(cx | cy)
                n_valid = int(valid.sum())
                if n_valid >= min_valid:
                    rp = np.einsum("ij,ij->i", zpx, zpy)
                    rs = np.einsum("ij,ij->i", zsx, zsy)
                    if n_valid < valid.size:
                        rp, rs = rp[valid], rs[valid]
                    rp, rs = np.clip(rp, -1.0, 1.0), np.clip(rs, -1.0, 1.0)
                    p_lo, p_hi = _percentile_ci(rp, ci)
                    s_lo, s_hi = _percentile_ci(rs, ci)
            rows.append((b, d, n, r, p_lo, p_hi, rho, s_lo, s_hi, n_valid))
        if boot is not None:
            boot.drop(b)  # bench resamples are not needed again; downstream ones are reused by the next bench
    out = pd.DataFrame(rows, columns=CORR_COLUMNS)
    out["n"] = out["n"].astype(int)
    out["n_boot_valid"] = out["n_boot_valid"].astype(int)
    return out


def corr_metrics(df: pd.DataFrame) -> dict[str, float]:
    """``{corr_key(method, bench, downstream): r}`` for Pearson and Spearman, NaN values dropped."""
    out: dict[str, float] = {}
    for row in df.itertuples(index=False):
        for method in ("pearson", "spearman"):
            v = getattr(row, method)
            if v is not None and np.isfinite(v):
                out[corr_key(method, row.bench, row.downstream)] = float(v)
    return out


def headline_pairs(df: pd.DataFrame, k: int = 4) -> list[tuple[str, str]]:
    """Pairs to plot: the overall RB2/RB1 scores against each method's headline outcome present in ``df`` (e.g.
    ``bon/gain_16``, ``ppo/gold``), then the strongest |pearson| others, k in all."""
    present = {(r.bench, r.downstream) for r in df.itertuples(index=False) if r.n > 0}
    preferred = [(b, d) for d in headline_metrics(set(df["downstream"]), rm_only=True) for b in HEADLINE_BENCH[:2]]
    pairs = [p for p in preferred if p in present][:k]
    others = df[np.isfinite(df["pearson"].to_numpy(dtype=float))]
    others = others.assign(_abs=others["pearson"].abs()).sort_values("_abs", ascending=False, kind="stable")
    for r in others.itertuples(index=False):
        if len(pairs) >= k:
            break
        if (r.bench, r.downstream) not in pairs:
            pairs.append((r.bench, r.downstream))
    return pairs


def _fmt(v, nd: int = 2) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(v) else f"{v:.{nd}f}"


def _title(bench: str, downstream: str, row) -> str:
    return (
        f"{bench} vs {downstream}: r={_fmt(row['pearson'])} [{_fmt(row['pearson_lo'])}, {_fmt(row['pearson_hi'])}], "
        f"rho={_fmt(row['spearman'])}, n={int(row['n'])}"
    )


def scatter_plot(
    table: pd.DataFrame,
    bench: str,
    downstream: str,
    row,
    path: str | os.PathLike,
    label_column: str | None = None,
) -> str:
    """Write a PNG scatter of ``downstream`` against ``bench`` with the least-squares line; title with r, CI, n.

    ``row`` is the :func:`correlate` row (Series or dict) for this pair. Uses the Agg canvas directly (no pyplot,
    no global backend change). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = pd.to_numeric(table[bench], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    y = pd.to_numeric(table[downstream], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    mask = np.isfinite(x) & np.isfinite(y)
    labels = table[label_column].to_numpy()[mask] if label_column and label_column in table.columns else None
    x, y = x[mask], y[mask]

    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, zorder=3)
    if labels is not None:
        for xi, yi, lab in zip(x, y, labels):
            ax.annotate(str(lab), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if x.size >= 2 and not _is_constant(x):
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="tab:red", lw=1.5, label=f"y = {slope:.3g} x + {intercept:.3g}")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(bench)
    ax.set_ylabel(downstream)
    ax.set_title(_title(bench, downstream, row), fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)


def format_table(df: pd.DataFrame, top: int | None = None) -> str:
    """Plain fixed-width text table; with ``top``, only the ``top`` rows of largest |pearson| (NaN last)."""
    if top is not None:
        df = df.assign(_abs=df["pearson"].abs()).sort_values("_abs", ascending=False, na_position="last")
        df = df.drop(columns="_abs").head(top)
    header = ["bench", "downstream", "n", "pearson", "95% CI", "spearman", "95% CI"]
    body = []
    for r in df.itertuples(index=False):
        body.append(
            [
                str(r.bench),
                str(r.downstream),
                str(int(r.n)),
                _fmt(r.pearson, 3),
                f"[{_fmt(r.pearson_lo, 3)}, {_fmt(r.pearson_hi, 3)}]",
                _fmt(r.spearman, 3),
                f"[{_fmt(r.spearman_lo, 3)}, {_fmt(r.spearman_hi, 3)}]",
            ]
        )
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    left = {0, 1}

    def line(cells: Iterable[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    if not body:
        lines.append("(no benchmark/downstream pairs)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------------------


def _client(tracking_uri: str | None):
    """An MlflowClient; refuses (AnalyzeError) a sqlite URI whose file does not exist, which MLflow would
    otherwise silently create (empty) as a side effect of reading."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    path = sqlite_path(uri)
    if path is not None and not os.path.exists(path):
        raise AnalyzeError(f"no MLflow database at {path}")
    return MlflowClient(tracking_uri=uri)


def _resolve(client, experiment_name: str, parent_run_id: str | None):
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        raise AnalyzeError(f"experiment {experiment_name!r} not found")
    if parent_run_id is None:
        parents = [r for r in search_all_runs(client, exp.experiment_id) if PARENT_TAG not in r.data.tags]
        if not parents:
            raise AnalyzeError(f"experiment {experiment_name!r} has no parent (sweep) run")
        parent_run_id = max(parents, key=lambda r: (r.info.start_time or 0)).info.run_id
    else:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(parent_run_id)
        except MlflowException as e:
            raise AnalyzeError(f"parent run {parent_run_id!r} not found") from e
        if run.info.experiment_id != exp.experiment_id:
            raise AnalyzeError(f"run {parent_run_id!r} is not in experiment {experiment_name!r}")
    return exp, parent_run_id


def _trials_frame(runs: list) -> pd.DataFrame:
    records = []
    for r in runs:
        rec = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "trial_key": r.data.tags.get(TRIAL_KEY_TAG),
        }
        rec.update({f"param:{k}": v for k, v in sorted(r.data.params.items())})
        rec.update(r.data.metrics)  # latest value per key; keys may contain spaces
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if len(df):
        df = df.sort_values("run_name", kind="stable", na_position="last").reset_index(drop=True)
    return df


def load_trials(experiment_name: str, tracking_uri: str | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """One row per FINISHED child run of ``parent_run_id`` (default: the latest-started parent run).

    Columns: ``run_id``, ``run_name``, ``trial_key`` (tag ``rmexp.trial_key``), ``param:<name>`` per param, and
    one column per metric (latest value). ``df.attrs`` holds ``experiment_id`` and ``parent_run_id``. Raises
    :class:`AnalyzeError` for a missing experiment / parent run.
    """
    client = _client(tracking_uri)
    exp, parent_run_id = _resolve(client, experiment_name, parent_run_id)
    runs = search_all_runs(
        client,
        exp.experiment_id,
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'FINISHED'",
    )
    df = _trials_frame(runs)
    df.attrs.update(experiment_id=exp.experiment_id, parent_run_id=parent_run_id)
    return df


def _label_column(table: pd.DataFrame) -> str | None:
    for c in ("param:model", "run_name"):
        if c in table.columns and table[c].notna().any():
            return c
    return None


def analyze_experiment(
    experiment_name: str,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    log_to_parent: bool = True,
    top: int | None = None,
    file=None,
) -> pd.DataFrame:
    """Load a sweep's finished trials, correlate, print the table and (``log_to_parent``) log on the parent run:
    ``corr/...`` metrics (step 0), ``correlations.csv`` / ``correlations.txt`` and ``plots/<bench>__<down>.png``.

    ``out_dir`` keeps the local copies of the files (default: a temporary directory). Raises
    :class:`AnalyzeError` when there is nothing to analyse.
    """
    uri = tracking_uri or default_tracking_uri()
    table = load_trials(experiment_name, uri, parent_run_id)
    parent = table.attrs["parent_run_id"]
    if table.empty:
        raise AnalyzeError(f"experiment {experiment_name!r}: parent run {parent} has no FINISHED child runs")
    means = config_means(table)  # replicates (same config, other seed) averaged: one point per config
    df = correlate(means, n_boot=n_boot, seed=seed)
    text = format_table(df, top=top)
    out_file = file or sys.stdout
    print(f"{experiment_name} / parent {parent}: {len(table)} finished trials, {len(means)} configs", file=out_file)
    print(text, file=out_file)
    two_level = [correlate_two_level(table, b, d, "pearson", n_boot, seed) for b, d in headline_pairs(df)]
    if two_level:
        print("\nheadline pairs, replicate-aware intervals:\n" + format_correlations(two_level), file=out_file)
    rel = reliability_table(table)
    if len(rel) and np.isfinite(rel["icc1"].to_numpy(dtype=float)).any():
        print("\nreliability (ICC(1): share of variance between configs, not seeds):\n" + format_reliability(rel),
              file=out_file)
    elif len(rel):
        print("\nreliability: no seed replicates in this sweep (trials that differ only in `seed`)", file=out_file)

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rmexp-analyze-")
        out_dir = tmp.name
    try:
        out = os.fspath(out_dir)
        plots = os.path.join(out, "plots")
        os.makedirs(plots, exist_ok=True)
        csv_path = os.path.join(out, "correlations.csv")
        txt_path = os.path.join(out, "correlations.txt")
        df.to_csv(csv_path, index=False)
        with open(txt_path, "w") as f:
            f.write(text + "\n")
        label = _label_column(table)
        plot_paths = []
        for b, d in headline_pairs(df):
            row = df[(df["bench"] == b) & (df["downstream"] == d)].iloc[0]
            p = os.path.join(plots, f"{slug(b)}__{slug(d)}.png")
            plot_paths.append(scatter_plot(means, b, d, row, p, label_column=label))

        if log_to_parent:
            from mlflow.entities import Metric

            from rmexp.sweep.summary import headline_rows

            client = _client(uri)
            ts = int(time.time() * 1000)
            # Only the headline pairs become parent metrics (as the sweep logs them); the full table is the artifact.
            metrics = [Metric(k, v, ts, 0) for k, v in corr_metrics(headline_rows(df)).items()]
            for i in range(0, len(metrics), 1000):  # log_batch accepts at most 1000 metrics per call
                client.log_batch(parent, metrics=metrics[i : i + 1000])
            client.log_artifact(parent, csv_path)
            client.log_artifact(parent, txt_path)
            for p in plot_paths:
                client.log_artifact(parent, p, artifact_path="plots")
    finally:
        if tmp is not None:
            tmp.cleanup()
    df.attrs.update(parent_run_id=parent, n_trials=len(table))
    return df


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rmexp.analyze",
        description="Correlate benchmark metrics with downstream metrics across a sweep's trials.",
    )
    ap.add_argument("--experiment", required=True, help="MLflow experiment (sweep) name")
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///<abs cwd>/mlflow.db")
    ap.add_argument("--parent-run-id", default=None, help="default: the latest parent run in the experiment")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=None, help="print only the TOP strongest |pearson| pairs")
    ap.add_argument("--out-dir", default=None, help="also keep the csv/txt/plots here")
    ap.add_argument("--no-log", action="store_true", help="do not log onto the parent run")
    args = ap.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        analyze_experiment(
            args.experiment,
            uri,
            parent_run_id=args.parent_run_id,
            n_boot=args.n_boot,
            seed=args.seed,
            out_dir=args.out_dir,
            log_to_parent=not args.no_log,
            top=args.top,
        )
    except AnalyzeError as e:
        print(f"rmexp.analyze: error: {e} (tracking URI {uri})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
