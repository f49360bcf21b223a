"""Analysis at two levels: configs (a trial's config minus its seed) and seed replicates within a config.

A sweep with ``sweep.replicates=N`` runs every grid point N times with different ``seed`` values; trials that
share every param but ``seed`` are replicates of one config. This module

* groups trials into configs (:func:`config_keys`; the config is every ``param:`` column except ``param:seed``)
  and averages replicates (:func:`config_means`): correlations are computed over config means;
* gives replicate-aware intervals for a correlation (:func:`correlate_two_level`): a two-stage bootstrap
  (resample configs, then each drawn config's replicates) and a Fisher-z interval, both reported and named;
* reports every headline metric's reliability (:func:`reliability_table`): ICC(1), the share of a trial's
  variance that lies between configs rather than between seeds (formula in :mod:`rmexp.stats`).

A sweep without replicates is the special case of one trial per config: the means are the trials, the
two-stage bootstrap is the ordinary bootstrap over trials, and reliability is NaN (no seed variance measured).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from rmexp import stats

SEED_PARAM = "param:seed"
#: Headline metrics whose reliability is reported, where the sweep logged them.
HEADLINE_METRICS = ("rb2/overall", "rb1/overall", "eval/acc", "bon/gain_16", "bon/gold_16", "ppo/gold",
                    "ppo/gold_delta")
CI_BOOT = "two-stage bootstrap (configs, then seeds)"
CI_FISHER = "Fisher z"


def config_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if str(c).startswith("param:") and c != SEED_PARAM]


def config_keys(table: pd.DataFrame) -> np.ndarray:
    """One string per trial naming its config (its params but the seed); trials with equal keys are replicates.

    Replicates are recognised by their ``seed`` param only: without a ``param:seed`` column every trial is its
    own config (two trials that log the same params are not assumed to be replicates)."""
    cols = config_columns(table)
    if SEED_PARAM not in table.columns or not cols:
        return np.array([f"trial {i}" for i in range(len(table))], dtype=object)
    return table[cols].astype(str).agg("\x1f".join, axis=1).to_numpy(dtype=object)


def _numeric(table: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def config_means(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per config: its params, the replicate mean of every metric (NaNs skipped) and ``n_replicates``.

    Metrics default to every column that is not a param or an id (``run_id``, ``run_name``, ``trial_key``).
    Configs keep the order of their first trial. ``attrs`` are carried over."""
    if table.empty:
        return table.copy()
    ids = {"run_id", "run_name", "trial_key"}
    if metrics is None:
        metrics = [c for c in table.columns if not str(c).startswith("param:") and c not in ids]
    keys = config_keys(table)
    rows = []
    for k in dict.fromkeys(keys):
        sel = table[keys == k]
        row = {c: sel[c].iloc[0] for c in config_columns(table)}
        if "run_name" in table.columns:
            row["run_name"] = sel["run_name"].iloc[0]
        for m in metrics:
            v = _numeric(sel, m)
            row[m] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        row["n_replicates"] = len(sel)
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    return out


def replicate_groups(table: pd.DataFrame, columns: Sequence[str]) -> list[np.ndarray]:
    """Per config (first-seen order), its trials' values of ``columns`` as [n_i, m], rows with a NaN dropped."""
    keys = config_keys(table)
    vals = np.column_stack([_numeric(table, c) for c in columns]) if len(table) else np.zeros((0, len(columns)))
    ok = np.isfinite(vals).all(axis=1)
    groups = []
    for k in dict.fromkeys(keys[ok]):
        groups.append(vals[ok & (keys == k)])
    return groups


def correlate_two_level(table: pd.DataFrame, bench: str, downstream: str, method: str = "pearson",
                        n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> dict:
    """Correlation of config means with a two-stage bootstrap interval and a Fisher-z interval.

    Returns ``bench``, ``downstream``, ``method``, ``r`` (over config means), ``n`` (configs), ``n_trials``,
    ``min_replicates``, ``boot_lo``/``boot_hi`` (percentile interval of the two-stage bootstrap, NaN when fewer
    than half the resamples are usable) and ``fisher_lo``/``fisher_hi`` (atanh/tanh with se 1/sqrt(n - 3) for
    Pearson; Fieller's sqrt(1.06 / (n - 3)) for Spearman). NaN r for fewer than 3 configs or a constant column.
    """
    groups = replicate_groups(table, [bench, downstream]) if {bench, downstream} <= set(table.columns) else []
    n = len(groups)
    out = {"bench": bench, "downstream": downstream, "method": method, "r": math.nan, "n": n,
           "n_trials": int(sum(g.shape[0] for g in groups)),
           "min_replicates": int(min((g.shape[0] for g in groups), default=0)),
           "boot_lo": math.nan, "boot_hi": math.nan, "fisher_lo": math.nan, "fisher_hi": math.nan}
    if n < 3:
        return out
    means = np.array([g.mean(axis=0) for g in groups])
    rows = stats.pearson_rows if method == "pearson" else stats.spearman_rows
    r = float(rows(means[None, :, 0], means[None, :, 1])[0])
    out["r"] = r
    if not math.isfinite(r):
        return out
    if n_boot and n_boot > 0:
        boot = stats.two_stage_means(groups, n_boot, np.random.default_rng(seed))
        out["boot_lo"], out["boot_hi"] = stats.percentile_ci(rows(boot[..., 0], boot[..., 1]), ci)
    if method == "pearson":
        out["fisher_lo"], out["fisher_hi"] = stats.fisher_z_ci(r, n, ci)
    elif n >= 4:  # Fieller, Hartley and Pearson (1957): var(atanh rho_s) ~ 1.06 / (n - 3)
        z, half = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15)), 1.959964 * math.sqrt(1.06 / (n - 3))
        out["fisher_lo"], out["fisher_hi"] = math.tanh(z - half), math.tanh(z + half)
    return out


def reliability(table: pd.DataFrame, metric: str) -> dict:
    """:func:`rmexp.stats.icc1` of ``metric`` over the table's configs, with the metric's name."""
    groups = replicate_groups(table, [metric]) if metric in table.columns else []
    return {"metric": metric, **stats.icc1([g[:, 0] for g in groups])}


def reliability_table(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One :func:`reliability` row per metric (default: the :data:`HEADLINE_METRICS` present)."""
    metrics = [m for m in (metrics or HEADLINE_METRICS) if m in table.columns]
    return pd.DataFrame([reliability(table, m) for m in metrics])


def _f(v, nd: int = 3) -> str:
    return "nan" if v is None or not math.isfinite(float(v)) else f"{float(v):.{nd}f}"


def format_correlations(rows: Sequence[dict]) -> str:
    """Markdown-ish table of :func:`correlate_two_level` rows (both intervals, named)."""
    lines = ["| bench | downstream | method | r | 95% CI (two-stage bootstrap) | 95% CI (Fisher z) | configs | "
             "trials |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bench']} | {r['downstream']} | {r['method']} | {_f(r['r'])} | "
                     f"[{_f(r['boot_lo'])}, {_f(r['boot_hi'])}] | [{_f(r['fisher_lo'])}, {_f(r['fisher_hi'])}] | "
                     f"{r['n']} | {r['n_trials']} |")
    return "\n".join(lines)


def format_reliability(df: pd.DataFrame) -> str:
    """Markdown-ish table of :func:`reliability_table` (ICC(1), seed SD, between-config SD)."""
    lines = ["| metric | configs | trials | ICC(1) | seed SD | between-config SD | SD of config means |",
             "|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        lines.append(f"| {r['metric']} | {r['n_configs']} | {r['n_trials']} | {_f(r['icc1'], 2)} | "
                     f"{_f(r['seed_sd'])} | {_f(r['between_sd'])} | {_f(r['config_sd'])} |")
    return "\n".join(lines)
