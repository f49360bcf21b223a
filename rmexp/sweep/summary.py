"""What a sweep prints: the status line, the summary table and the headline correlations, and the outcome
records they read (:class:`TrialOutcome`, :class:`SweepResult`)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from rmexp import tracking as T
from rmexp.analyze import HEADLINE_BENCH
from rmexp.downstream import headline_metrics
from rmexp.sweep.grid import TrialSpec



@dataclass
class TrialOutcome:
    spec: TrialSpec
    status: str = "PENDING"      # PENDING | RUNNING | FINISHED | CACHED | FAILED
    run_id: str | None = None
    cached_from: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None


@dataclass
class SweepResult:
    name: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    trials: list[TrialOutcome]
    correlations: Any = None     # the DataFrame of rmexp.analyze.correlate, or None

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def n_failed(self) -> int:
        return self.count("FAILED")

    @property
    def n_cached(self) -> int:
        return self.count("CACHED")

    @property
    def n_run(self) -> int:
        return self.count("FINISHED") + self.n_failed

    @property
    def ok(self) -> bool:
        return self.n_failed == 0 and all(t.status in ("FINISHED", "CACHED") for t in self.trials)


def _fmt_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_line(name: str, trials: list[TrialOutcome], elapsed: float) -> str:
    n = len(trials)
    done = sum(t.status in ("FINISHED", "CACHED", "FAILED") for t in trials)
    cached = sum(t.status == "CACHED" for t in trials)
    failed = sum(t.status == "FAILED" for t in trials)
    running = sum(t.status == "RUNNING" for t in trials)
    pending = sum(t.status == "PENDING" for t in trials)
    return (f"[sweep {name}] {done}/{n} done ({cached} cached, {failed} failed), {running} running, "
            f"{pending} pending, {_fmt_elapsed(elapsed)} elapsed")


def _cell(v: Any, width: int = 40) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    s = T.axes_label({"_": v})[2:] if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= width else s[:width - 1] + "~"


def summary_table(trials: list[TrialOutcome]) -> str:
    """Fixed-width text: trial, its axis values, status, headline metrics, seconds."""
    axes = list(dict.fromkeys(k for t in trials for k in t.spec.axes))
    # The overall benchmark scores, then each downstream method's headline outcomes that some trial has.
    metrics = [*HEADLINE_BENCH, *headline_metrics({k for t in trials for k in t.metrics})]
    header = ["trial", *axes, "status", *metrics, "seconds"]
    rows = []
    for t in trials:
        rows.append([t.spec.name, *[_cell(t.spec.axes.get(a)) for a in axes], t.status,
                     *[_cell(t.metrics.get(m)) for m in metrics],
                     "-" if t.seconds is None else f"{t.seconds:.1f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    n_left = 2 + len(axes)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    for t in trials:
        if t.status == "FAILED" and t.error:
            lines.append(f"  {t.spec.name} FAILED: {t.error}")
    return "\n".join(lines)


def headline_rows(df):
    """The rows of a correlation table (:func:`rmexp.analyze.correlate`) that the sweep shows: the overall
    benchmark scores against the headline downstream metrics (else :func:`rmexp.analyze.headline_pairs`)."""
    from rmexp.analyze import headline_pairs

    heads = headline_metrics(set(df["downstream"]), rm_only=True)
    sel = df[df["bench"].isin(HEADLINE_BENCH) & df["downstream"].isin(heads)]
    order = {(b, d): i for i, (b, d) in enumerate(itertools.product(HEADLINE_BENCH, heads))}
    sel = sel.iloc[sorted(range(len(sel)), key=lambda i: order[(sel["bench"].iloc[i], sel["downstream"].iloc[i])])]
    if sel.empty:
        pairs = headline_pairs(df)
        sel = df[[(b, d) in pairs for b, d in zip(df["bench"], df["downstream"])]]
    return sel


def headline_correlations(df) -> str:
    """:func:`headline_rows` as a table."""
    from rmexp.analyze import format_table

    return format_table(headline_rows(df))
