"""Best-of-N (BoN) evaluation of a reward model.

For each eval prompt the policy has produced M samples, each with a gold score (true quality, from the
verifier) and a proxy score (the reward model's). BoN at N picks, among N samples, the one the RM likes
best; we report the expected gold score of that pick.

We never draw random subsets: the expectation over all size-N subsets of the M samples (drawn uniformly
without replacement) has a closed form, so the estimate is exact given the M samples and costs O(M log M)
per prompt. Sort the samples by proxy, descending; the sample of rank i (0-based) is the proxy-max of a
random N-subset iff it is in the subset and the other N-1 members all come from the M-1-i samples ranked
below it, which has probability C(M-1-i, N-1) / C(M, N).

Metric keys spell "@N" as "_N" (`bon/gold_4`), because MLflow metric keys may not contain '@'.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmexp import stats
from rmexp.plots import save_figure

DEFAULT_NS: tuple[int, ...] = (1, 2, 4, 8, 16)
OVERALL = "overall"  # the domain label of the all-prompts rows in `bon_curve_table`


# --------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------

def _check_n(n: int, m: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"best-of-N: n must be an integer, got {n!r}")
    if not 1 <= n <= m:
        raise ValueError(f"best-of-N: n must satisfy 1 <= n <= M = {m} (samples per prompt), got n = {n}")
    return int(n)


@functools.lru_cache(maxsize=256)
def _rank_weights_cached(m: int, n: int) -> np.ndarray:
    total = math.comb(m, n)
    # Exact integer binomials; Python's int / int is correctly rounded even for huge ints, so this stays
    # exact-to-float for M in the hundreds (C(600, 300) ~ 1e179) where float binomials would overflow.
    w = np.array([math.comb(m - 1 - i, n - 1) / total for i in range(m)], dtype=np.float64)
    w.setflags(write=False)  # cached and shared: keep callers from mutating it
    return w


def bon_rank_weights(m: int, n: int) -> np.ndarray:
    """P(the sample of proxy rank i is the max of a uniform random n-subset of m), for i = 0..m-1.

    Rank 0 is the highest proxy score. The weights sum to 1 (hockey-stick identity).
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"best-of-N: M (samples per prompt) must be a positive integer, got {m!r}")
    return _rank_weights_cached(int(m), _check_n(n, int(m)))


def _as_2d(gold: Any, proxy: Any) -> tuple[np.ndarray, np.ndarray]:
    gold = np.asarray(gold, dtype=np.float64)
    proxy = np.asarray(proxy, dtype=np.float64)
    if gold.shape != proxy.shape:
        raise ValueError(f"best-of-N: gold and proxy must have the same shape, got {gold.shape} and {proxy.shape}")
    if gold.ndim != 2 or gold.shape[1] < 1:
        raise ValueError(f"best-of-N: expected scores of shape [prompts, samples], got {gold.shape}")
    if np.isnan(proxy).any() or np.isnan(gold).any():
        raise ValueError("best-of-N: gold and proxy scores must not contain NaN")
    return gold, proxy


def _gold_sorted_by_proxy(gold: np.ndarray, proxy: np.ndarray) -> np.ndarray:
    """Gold scores of each row, reordered by proxy descending, with proxy ties replaced by their mean gold.

    Why the tie-averaging is exact: when several samples of a subset tie at the maximal proxy, the pick is
    uniform among them, so that subset contributes the mean gold of the tied members it contains. Over the
    random subsets, members of one tie group are exchangeable (they have the same proxy and the subset is
    uniform), so the expected mean over whichever members are present equals the mean over the whole group.
    Giving every member the group mean therefore leaves the expectation unchanged, and with equal golds
    inside a group the (arbitrary) order among tied samples no longer matters to the rank formula.
    """
    order = np.argsort(-proxy, axis=1, kind="stable")
    g = np.take_along_axis(gold, order, axis=1)
    p = np.take_along_axis(proxy, order, axis=1)
    out = g.copy()
    tied_rows = np.nonzero((p[:, 1:] == p[:, :-1]).any(axis=1))[0]
    for r in tied_rows:  # only rows that actually have ties pay for the group loop
        starts = np.concatenate(([0], np.nonzero(p[r, 1:] != p[r, :-1])[0] + 1))
        sizes = np.diff(np.concatenate((starts, [p.shape[1]])))
        out[r] = np.repeat(np.add.reduceat(g[r], starts) / sizes, sizes)
    return out


def best_of_n_per_prompt(gold: np.ndarray, proxy: np.ndarray, n: int) -> np.ndarray:
    """Exact expected gold of the proxy-argmax over random size-n subsets, per prompt: [P, M] -> [P]."""
    gold, proxy = _as_2d(gold, proxy)
    w = bon_rank_weights(gold.shape[1], n)
    return _gold_sorted_by_proxy(gold, proxy) @ w


def expected_best_of_n(gold: np.ndarray, proxy: np.ndarray, n: int) -> float:
    """Exact expected gold score of the proxy-argmax sample of a uniform random size-n subset of M samples.

    `gold` and `proxy` are 1-d arrays of length M. Proxy ties are broken uniformly at random (see
    `_gold_sorted_by_proxy`). n = 1 gives the mean gold; n = M gives the gold of the proxy-argmax.
    Raises ValueError unless 1 <= n <= M.
    """
    gold = np.asarray(gold, dtype=np.float64)
    proxy = np.asarray(proxy, dtype=np.float64)
    if gold.ndim != 1 or proxy.ndim != 1:
        raise ValueError(f"expected_best_of_n: expected 1-d arrays, got shapes {gold.shape} and {proxy.shape}")
    return float(best_of_n_per_prompt(gold[None, :], proxy[None, :], n)[0])


# --------------------------------------------------------------------------------------------------
# Metrics over an eval set
# --------------------------------------------------------------------------------------------------

def bon_metrics(
    gold: np.ndarray,
    proxy: np.ndarray,
    domains: Sequence[str],
    ns: Sequence[int] = DEFAULT_NS,
) -> dict[str, float]:
    """BoN curves averaged over prompts, overall and per domain.

    gold, proxy: [P, M]; domains: P domain names (kept verbatim, spaces included).
    Keys: `bon/gold_{N}` (RM pick), `bon/oracle_{N}` (pick by gold itself), `bon/gain_{N}` = gold_N - gold_1,
    and `bon/{domain}/gold_{N}`, `bon/{domain}/oracle_{N}`, `bon/{domain}/gain_{N}`.
    """
    gold, proxy = _as_2d(gold, proxy)
    p, m = gold.shape
    domains = [str(d) for d in domains]
    if len(domains) != p:
        raise ValueError(f"bon_metrics: got {len(domains)} domain labels for {p} prompts")
    if OVERALL in domains:
        raise ValueError(f"bon_metrics: domain name {OVERALL!r} is reserved for the all-prompts curve")
    ns = [_check_n(n, m) for n in ns]
    if len(set(ns)) != len(ns):
        raise ValueError(f"bon_metrics: ns has duplicates: {list(ns)}")

    # gold_1 is needed for the gains even when 1 is not in ns.
    all_ns = sorted(set(ns) | {1})
    rm = {n: best_of_n_per_prompt(gold, proxy, n) for n in all_ns}
    oracle = {n: best_of_n_per_prompt(gold, gold, n) for n in all_ns}

    dom = np.array(domains, dtype=object)
    groups: list[tuple[str, np.ndarray]] = [("bon/", np.ones(p, dtype=bool))]
    for d in dict.fromkeys(domains):  # first-seen order, deterministic
        groups.append((f"bon/{d}/", dom == d))

    out: dict[str, float] = {}
    for prefix, sel in groups:
        gold_1 = float(rm[1][sel].mean())
        for n in ns:
            g = float(rm[n][sel].mean())
            out[f"{prefix}gold_{n}"] = g
            out[f"{prefix}oracle_{n}"] = float(oracle[n][sel].mean())
            out[f"{prefix}gain_{n}"] = g - gold_1
    return out


def bon_extra_metrics(gold: np.ndarray, proxy: np.ndarray, ns: Sequence[int] = DEFAULT_NS) -> dict[str, float]:
    """Over all prompts: `bon/gain_{N}_se`, the SE over prompts of the per-prompt gain gold_N - gold_1
    (rmexp.stats.mean_se: the prompts are the sampling unit); and `bon/proxy_gain_{N}`, the expected proxy
    score of the pick minus the mean proxy score of the samples (the RM's view of the same curve, normalised so
    the policy itself scores 0, for over-optimisation plots)."""
    gold, proxy = _as_2d(gold, proxy)
    ns = [_check_n(n, gold.shape[1]) for n in ns]
    gold_1, proxy_1 = best_of_n_per_prompt(gold, proxy, 1), proxy.mean(axis=1)
    out: dict[str, float] = {}
    for n in ns:
        out[f"bon/gain_{n}_se"] = stats.mean_se(best_of_n_per_prompt(gold, proxy, n) - gold_1)
        out[f"bon/proxy_gain_{n}"] = float((best_of_n_per_prompt(proxy, proxy, n) - proxy_1).mean())
    return out


def bon_curve_table(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Rows {domain, n, gold, oracle} parsed from `bon_metrics` output (or the same keys read back from MLflow).

    The all-prompts curve has domain "overall" and comes first; domains follow in key order, n ascending.
    """
    found: dict[str, dict[int, dict[str, float]]] = {}
    for key, value in metrics.items():
        if not key.startswith("bon/"):
            continue
        head, _, leaf = key[len("bon/"):].rpartition("/")  # rpartition: domain names may hold '/'
        kind, _, n_str = leaf.rpartition("_")
        if kind not in ("gold", "oracle") or not n_str.isdigit():
            continue
        domain = head if head else OVERALL
        found.setdefault(domain, {}).setdefault(int(n_str), {})[kind] = float(value)
    order = sorted(found, key=lambda d: d != OVERALL)  # stable: overall first, the rest as found
    rows = []
    for d in order:
        for n in sorted(found[d]):
            v = found[d][n]
            rows.append({"domain": d, "n": n, "gold": v.get("gold", math.nan), "oracle": v.get("oracle", math.nan)})
    return rows


def plot_bon_curves(metrics_or_rows: Mapping[str, float] | Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a PNG of BoN curves: one small panel per domain (overall first), x = N on a log2 axis,
    gold of the RM's pick (solid) and of the oracle pick (dashed). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # headless: trials run in Ray workers without a display
    import matplotlib.pyplot as plt

    rows = bon_curve_table(metrics_or_rows) if isinstance(metrics_or_rows, Mapping) else list(metrics_or_rows)
    if not rows:
        raise ValueError("plot_bon_curves: no BoN rows to plot")
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    ncols = min(4, len(domains))
    nrows = math.ceil(len(domains) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, d in zip(axes.flat, domains):
        rs = sorted((r for r in rows if r["domain"] == d), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        ax.plot(ns, [r["gold"] for r in rs], "o-", color="tab:blue", label="RM pick (gold)")
        ax.plot(ns, [r["oracle"] for r in rs], "s--", color="tab:gray", label="oracle")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_title(d, fontweight="bold" if d == OVERALL else "normal")
        ax.grid(True, alpha=0.3)
    for k, ax in enumerate(axes.flat):
        if k >= len(domains):
            ax.set_visible(False)
        elif k + ncols >= len(domains):  # lowest visible panel of its column: show its N axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("N")
    for ax in axes[:, 0]:
        ax.set_ylabel("gold score")
    axes.flat[0].legend(loc="best", fontsize="small")
    fig.suptitle("Best-of-N: expected gold score")
    return save_figure(fig, path)
