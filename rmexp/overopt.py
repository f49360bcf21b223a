"""Reward over-optimisation: gold and proxy reward against KL from the policy, for best-of-N and PPO.

Best-of-N's KL from the sampling policy has a closed form (Stiennon et al. 2020; Gao et al. 2022):
KL(BoN_N || pi) = log N - (N - 1) / N, for continuous rewards without ties. A trial logs ``bon/gain_N`` (gold of
the RM's pick minus the policy's mean gold) and ``bon/proxy_gain_N`` (the RM's own score of its pick minus its
mean score), so each trial traces one BoN curve. PPO logs the measured KL with gold and proxy (``ppo/kl``,
``ppo/gold_delta``, ``ppo/proxy_delta``, and their per-step history); a sweep over ``downstream.ppo.kl_coef``
traces the PPO curve. ``conf/sweep/overoptimization.yaml`` crosses both with RMs of different quality
(``data.label_noise``); :func:`plot_overoptimization` draws the figure.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


QUALITY_PARAM = "param:data.label_noise"   # what makes an RM weaker in the study
KL_COEF_PARAM = "param:downstream.ppo.kl_coef"
_BON_GAIN = re.compile(r"^bon/gain_(\d+)$")


def bon_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n (nats)."""
    if n < 1:
        raise ValueError(f"best-of-N: n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def bon_points(metrics: Mapping[str, float]) -> list[tuple[int, float, float, float]]:
    """(N, KL, gold gain, proxy gain) for every ``bon/gain_N`` in ``metrics``, N ascending (gain 0 at N = 1)."""
    out = []
    for key, value in metrics.items():
        m = _BON_GAIN.match(str(key))
        if m and np.isfinite(value):
            n = int(m.group(1))
            out.append((n, bon_kl(n), float(value), float(metrics.get(f"bon/proxy_gain_{n}", math.nan))))
    return sorted(out)


def _label(value) -> str:
    return f"label noise {value}"


def plot_overoptimization(trials: pd.DataFrame, path: str | Path,
                          histories: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]] | None = None) -> Path:
    """Two panels: BoN (gold and proxy gain vs analytic KL) and PPO (gold and proxy change vs measured KL), one
    colour per RM quality (``data.label_noise``). Gold is solid on the left axis, proxy dashed on the right one
    (RM scores are on their own scale). PPO: the final point of each KL coefficient, joined in KL order, and,
    given ``histories`` (run_id -> {"ppo/kl": [(step, v)], "ppo/gold": ..., "ppo/proxy": ...}), each run's
    evaluation steps as faint lines (gold relative to the first evaluation)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))  # no pyplot: no global backend change inside a notebook
    FigureCanvasAgg(fig)
    ax_bon, ax_ppo = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    twin_bon, twin_ppo = ax_bon.twinx(), ax_ppo.twinx()
    quality = trials[QUALITY_PARAM].astype(str) if QUALITY_PARAM in trials.columns else pd.Series(["?"] * len(trials))
    colours = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:blue", "tab:brown"]
    for i, q in enumerate(sorted(quality.unique(), key=lambda v: float(v) if v.replace(".", "", 1).isdigit() else 0)):
        col = colours[i % len(colours)]
        rows = trials[quality.to_numpy() == q]
        bon = [bon_points(r) for r in rows.to_dict("records")]
        bon = [b for b in bon if b]
        if bon:  # trials of one quality share the RM and the samples: draw the first curve, with (1, 0, 0, 0)
            pts = [(1, 0.0, 0.0, 0.0)] + [p for p in bon[0] if p[0] > 1]
            ax_bon.plot([p[1] for p in pts], [p[2] for p in pts], "o-", color=col, label=_label(q))
            twin_bon.plot([p[1] for p in pts], [p[3] for p in pts], "s--", color=col, alpha=0.7)
        if "ppo/kl" in rows.columns and "ppo/gold_delta" in rows.columns:
            ppo = rows[["ppo/kl", "ppo/gold_delta"] + (["ppo/proxy_delta"] if "ppo/proxy_delta" in rows else [])]
            ppo = ppo.apply(pd.to_numeric, errors="coerce").dropna(subset=["ppo/kl", "ppo/gold_delta"])
            ppo = ppo.sort_values("ppo/kl")
            if len(ppo):
                ax_ppo.plot([0.0] + list(ppo["ppo/kl"]), [0.0] + list(ppo["ppo/gold_delta"]), "o-", color=col,
                            label=_label(q))
                if "ppo/proxy_delta" in ppo:
                    twin_ppo.plot([0.0] + list(ppo["ppo/kl"]), [0.0] + list(ppo["ppo/proxy_delta"]), "s--",
                                  color=col, alpha=0.7)
        for run_id in rows.get("run_id", pd.Series(dtype=str)):
            h = (histories or {}).get(run_id) or {}
            if h.get("ppo/kl") and h.get("ppo/gold"):
                kl, gold = [v for _, v in h["ppo/kl"]], [v for _, v in h["ppo/gold"]]
                k = min(len(kl), len(gold))
                ax_ppo.plot(kl[:k], [g - gold[0] for g in gold[:k]], "-", color=col, alpha=0.25, lw=1)
    for ax, twin, title, xlabel in ((ax_bon, twin_bon, "best-of-N", "KL = log N - (N-1)/N (nats)"),
                                    (ax_ppo, twin_ppo, "PPO (final point per KL coefficient)", "measured KL (nats)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("gold gain over the policy (solid)")
        twin.set_ylabel("proxy (RM) gain (dashed)")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
