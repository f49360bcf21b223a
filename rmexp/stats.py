"""Small statistics used by trials and by the analysis: standard errors, Fisher-z intervals, reliability (ICC(1))
and the two-stage (configs, then seeds) bootstrap.

Standard errors (computed inside a trial, logged next to the headline metric):

* ``binomial_se(results)``: SE of an accuracy from 0/1 results, sqrt(p (1 - p) / n).
* ``mean_se(values)``: SE of a mean, sd(values, ddof=1) / sqrt(n).
* ``mean_of_means_se(ses)``: SE of an unweighted mean of k independent estimates, sqrt(sum se_i^2) / k
  (RB2 overall is the unweighted mean of its six subsets, which are scored on disjoint rows).
* ``bootstrap_se(units, statistic)``: sd of ``statistic`` over resamples of ``units`` (for a score that is not
  a mean, such as the RB2 Ties formula).

Across trials:

* ``fisher_z_ci(r, n)``: tanh(atanh(r) -/+ z_{1-a/2} / sqrt(n - 3)), the normal-theory interval for Pearson r.
* ``icc1(groups)``: one-way random-effects intraclass correlation of a metric over configs (groups) whose
  members are seed replicates. With g configs, N trials, n_i trials in config i, grand mean m, config means m_i::

      MSB = sum_i n_i (m_i - m)^2 / (g - 1)                 between-config mean square
      MSW = sum_i sum_j (x_ij - m_i)^2 / (N - g)            within-config (seed) mean square
      k0  = (N - sum_i n_i^2 / N) / (g - 1)                 average replicates per config (= k when balanced)
      ICC(1) = (MSB - MSW) / (MSB + (k0 - 1) MSW)

  ICC(1) estimates sigma_b^2 / (sigma_b^2 + sigma_w^2): the share of a single trial's variance that lies between
  configs rather than between seeds (1: seeds do not matter; 0 or below: the configs are not told apart).
  ``icc1k`` = (MSB - MSW) / MSB is the reliability of a config's mean over k0 replicates (Spearman-Brown).
* ``two_stage_means``: bootstrap means of resampled configs, each from its own resample of its replicates.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def binomial_se(results: Sequence[float]) -> float:
    """SE of the accuracy of 0/1 results: sqrt(p (1 - p) / n); NaN for no results."""
    x = np.asarray(results, dtype=float)
    if x.size == 0:
        return math.nan
    p = float(x.mean())
    return math.sqrt(p * (1.0 - p) / x.size)


def mean_se(values: Sequence[float]) -> float:
    """SE of the mean: sample sd (ddof=1) / sqrt(n); NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan
    return float(x.std(ddof=1) / math.sqrt(x.size))


def mean_of_means_se(ses: Sequence[float]) -> float:
    """SE of the unweighted mean of k independent estimates with standard errors ``ses``."""
    s = np.asarray(ses, dtype=float)
    if s.size == 0:
        return math.nan
    return float(math.sqrt(float(np.sum(s ** 2))) / s.size)


def bootstrap_se(units: Sequence, statistic: Callable[[list], float], n_boot: int = 200, seed: int = 0) -> float:
    """Sample sd (ddof=1) of ``statistic`` over ``n_boot`` resamples (with replacement) of ``units``; seeded, so
    a trial's SE is a pure function of its inputs. NaN for fewer than 2 units or non-finite statistics."""
    units = list(units)
    if len(units) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(units), size=(n_boot, len(units)))
    vals = np.array([statistic([units[i] for i in row]) for row in idx], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(vals.std(ddof=1)) if vals.size >= 2 else math.nan


def fisher_z_ci(r: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Normal-theory interval for Pearson r from n pairs: tanh(atanh(r) -/+ z / sqrt(n - 3)); NaN for n < 4."""
    if n < 4 or not math.isfinite(r):
        return math.nan, math.nan
    import scipy.stats  # here, not at the top: a trial process imports this module and never needs scipy (~1.3 s)

    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    half = scipy.stats.norm.ppf(0.5 + ci / 2.0) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def icc1(groups: Sequence[Sequence[float]]) -> dict[str, float]:
    """One-way ANOVA reliability of a metric over configs (``groups``, each the values of its seed replicates).

    Returns ``icc1`` (see the module docstring), ``icc1k``, ``msb``, ``msw``, ``k0``, ``seed_sd`` = sqrt(MSW),
    ``between_sd`` = sqrt(max(0, (MSB - MSW) / k0)) (the configs' true spread), ``config_sd`` (sd of the config
    means), ``n_configs``, ``n_trials``. Statistics that need replicates (a config with >= 2 trials) or >= 2
    configs are NaN without them.
    """
    gs = [np.asarray(g, dtype=float) for g in groups]
    gs = [g[np.isfinite(g)] for g in gs]
    gs = [g for g in gs if g.size]
    g_n = len(gs)
    n_i = np.array([g.size for g in gs], dtype=float)
    big_n = float(n_i.sum())
    nan = math.nan
    out = {"n_configs": g_n, "n_trials": int(big_n), "icc1": nan, "icc1k": nan, "msb": nan, "msw": nan,
           "k0": nan, "seed_sd": nan, "between_sd": nan, "config_sd": nan}
    if g_n == 0:
        return out
    means = np.array([g.mean() for g in gs])
    if g_n >= 2:
        out["config_sd"] = float(means.std(ddof=1))
    if big_n > g_n:
        out["msw"] = float(sum(((g - g.mean()) ** 2).sum() for g in gs) / (big_n - g_n))
        out["seed_sd"] = math.sqrt(out["msw"])
    if g_n >= 2:
        grand = float(np.concatenate(gs).mean())
        out["msb"] = float((n_i * (means - grand) ** 2).sum() / (g_n - 1))
        out["k0"] = float((big_n - (n_i ** 2).sum() / big_n) / (g_n - 1))
    if g_n >= 2 and big_n > g_n:
        msb, msw, k0 = out["msb"], out["msw"], out["k0"]
        denom = msb + (k0 - 1.0) * msw
        out["icc1"] = (msb - msw) / denom if denom > 0 else nan
        out["icc1k"] = (msb - msw) / msb if msb > 0 else nan
        out["between_sd"] = math.sqrt(max(0.0, (msb - msw) / k0))
    return out


def two_stage_means(groups: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                    choice: np.ndarray | None = None) -> np.ndarray:
    """Two-stage bootstrap: [n_boot, g, m] means.

    ``groups``: g arrays of shape [n_i, m] (a config's replicates by m metrics). Stage 1 draws g configs with
    replacement (``choice`` [n_boot, g], drawn here unless given, so two arms of a paired comparison can share
    it); stage 2 draws, for every drawn slot independently, n_c replicates of that config with replacement and
    averages them (all m metrics from the same replicates, so pairs stay pairs).
    """
    g = len(groups)
    m = groups[0].shape[1]
    counts = np.array([x.shape[0] for x in groups])
    k = int(counts.max())
    padded = np.zeros((g, k, m))
    for i, x in enumerate(groups):
        padded[i, : x.shape[0]] = x
    if choice is None:
        choice = rng.integers(0, g, size=(n_boot, g))
    n_c = counts[choice]                                              # [B, g]
    u = rng.random((choice.shape[0], choice.shape[1], k))
    rep = np.minimum((u * n_c[..., None]).astype(int), n_c[..., None] - 1)  # replicate drawn at each position
    used = np.arange(k)[None, None, :] < n_c[..., None]              # only the first n_c positions count
    vals = padded[choice[..., None], rep]                             # [B, g, k, m]
    return (vals * used[..., None]).sum(axis=2) / n_c[..., None]


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of [B, n] arrays; NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / den
    const = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    r[const] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rho (Pearson r of average ranks); NaN where a row is constant."""
    import scipy.stats

    return pearson_rows(scipy.stats.rankdata(x, axis=1), scipy.stats.rankdata(y, axis=1))


def percentile_ci(samples: np.ndarray, ci: float = 0.95, min_valid: float = 0.5) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaN when fewer than ``min_valid`` of them are finite."""
    s = np.asarray(samples, dtype=float)
    ok = s[np.isfinite(s)]
    if s.size == 0 or ok.size < max(2, min_valid * s.size):
        return math.nan, math.nan
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(ok, [a, 1.0 - a])
    return float(lo), float(hi)
