"""Paper-ablation studies: check a paper's finding against what a sweep measured.

A *study* (``sweeps/<name>.yaml``) names a sweep (``conf/sweep/<name>.yaml``, whose ``sweep.name`` is the MLflow
experiment), the paper and its finding, the numbers the paper reports, and a list of machine-checkable
``checks``. This module loads the sweep's finished trials (:func:`rmexp.analyze.load_trials`), evaluates every
check with a bootstrap CI and gives each a verdict:

* ``agrees``       the measured effect has the expected sign and its 95% interval(s) exclude 0, with at least
                   3 independent units behind them (:data:`MIN_UNITS`: matched pairs or configs, or, with fewer
                   pairs, seed replicates inside every pair: a replicate-level interval);
* ``disagrees``    the same on the other side (a finding, not an error: exit code stays 0);
* ``inconclusive`` the interval spans 0;
* ``inconclusive (n too small)``  fewer units than :data:`MIN_UNITS` or than the check's ``min_n``: no verdict;
* ``missing``      a metric or param the check needs is not in the trials table.

Replicates: trials that share every param but ``seed`` are seed replicates of one config
(:mod:`rmexp.replicates`). Values are computed on config means; intervals resample configs (or pairs), then
seeds within them (two-stage bootstrap); correlations also get a Fisher-z interval and "agrees" needs both
intervals to exclude 0. Each result names its interval method (``ci_method``). A percentile bootstrap over very
few seeds is narrower than it should be (with k draws the resampled variance is (k - 1)/k of the sample's), one
reason the verdict also asks for :data:`MIN_UNITS` units.

Check kinds (every kind also takes ``name``, ``paper`` (what the paper says, free text), ``where`` (a mapping
``param: value`` or ``param: [values]`` that selects trials first) and ``min_n``):

``correlation``  ``bench``, ``downstream``, ``method`` (pearson | spearman), ``expect`` (positive | negative).
                 Value: r across config means; CIs: two-stage bootstrap and Fisher z
                 (:func:`rmexp.replicates.correlate_two_level`).
``group_diff``   ``metric``, ``param``, ``a``, ``b``, ``expect`` (a_greater | b_greater), optional ``match``.
                 Value: mean(metric | param == a) - mean(metric | param == b). Paired when trials can be
                 matched on the ``match`` params (default: every other param but ``seed`` that varies in the
                 sweep): one difference per matched cell (each arm's trials averaged first), CI by resampling the
                 cells, then each arm's trials within a cell. Otherwise unpaired: difference of group means, CI
                 by resampling within each group.
``rank``         ``metric``, ``param``, ``order`` (the param's values, lowest first), ``expect``
                 (increasing | decreasing). Value: Spearman rho of the metric with the position of each
                 config's value in ``order`` (others are left out), over config means; CIs as for correlation.
``metric_diff``  ``a``, ``b`` (two metric names), ``expect`` (a_greater | b_greater). Value: mean over trials of
                 a - b, paired within each trial (two downstream methods run on the same RM, data and policy);
                 CI: bootstrap over trials.

Param values are compared as strings, and numerically where both sides parse as numbers (so ``2``, ``"2"`` and
``"2.0"`` are the same epoch count, ``3.0e-4`` and ``"0.0003"`` the same learning rate).

CLI::

    python -m rmexp.study sweeps/epochs.yaml [--tracking-uri URI] [--parent-run-id ID] [--json PATH]
                          [--n-boot N] [--seed S]

Exit code 0 whatever the verdicts; 2 with a one-line message for a bad study file or a missing experiment.

Longer than the usual module on purpose: the study-file schema, the evaluator of each check kind and the
verdict rules are read together when judging whether a verdict is honest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

N_TOO_SMALL = "inconclusive (n too small)"
VERDICTS = ("agrees", "disagrees", "inconclusive", N_TOO_SMALL, "missing")
#: Fewest independent units (matched pairs, configs, or seed replicates across the pairs) behind a verdict.
MIN_UNITS = 3

#: kind -> (required fields, optional fields, allowed ``expect`` values)
COMMON_OPTIONAL = {"name", "paper", "where", "min_n", "note"}
KINDS: dict[str, tuple[set[str], set[str], tuple[str, ...]]] = {
    "correlation": ({"bench", "downstream", "expect"}, {"method"}, ("positive", "negative")),
    "group_diff": ({"metric", "param", "a", "b", "expect"}, {"match"}, ("a_greater", "b_greater")),
    "rank": ({"metric", "param", "order", "expect"}, set(), ("increasing", "decreasing")),
    "metric_diff": ({"a", "b", "expect"}, set(), ("a_greater", "b_greater")),
}
METHODS = ("pearson", "spearman")
DEFAULT_MIN_N = {"correlation": 5, "group_diff": 1, "rank": 3, "metric_diff": 3}  # percentile CIs of r are unreliable below 5
TOP_REQUIRED = ("sweep", "command", "paper", "finding", "paper_numbers", "checks")
TOP_OPTIONAL = ("notes", "description")


class StudyError(ValueError):
    """A bad study file: the message names the file, the key and what is allowed."""


@dataclass
class Study:
    path: str
    sweep: str
    command: str
    paper: str
    finding: str
    paper_numbers: dict[str, Any]
    checks: list[dict[str, Any]]
    notes: str | None = None


@dataclass
class CheckResult:
    name: str
    kind: str
    expect: str
    paper: str  # what the paper says (the check's ``paper`` text, or the expectation spelled out)
    value: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    n: int = 0
    verdict: str = "missing"
    detail: str = ""
    ci_method: str = ""
    check: dict[str, Any] = field(default_factory=dict)

    def measured(self) -> str:
        """``r=+0.83 [+0.41, +0.97] n=8 (detail)`` style text."""
        sym = {"correlation": "r", "group_diff": "diff", "rank": "rho", "metric_diff": "diff"}.get(self.kind, "value")
        if self.kind == "correlation" and self.check.get("method") == "spearman":
            sym = "rho"
        if math.isnan(self.value):
            text = f"n={self.n}"
        else:
            text = f"{sym}={self.value:+.3f} [{_f(self.ci_lo)}, {_f(self.ci_hi)}] n={self.n}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("value", "ci_lo", "ci_hi"):
            d[k] = None if math.isnan(d[k]) else d[k]
        d["measured"] = self.measured()
        return d


def _f(v: float) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:+.3f}"


# --------------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------------


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) and v is not None


def _validate_check(i: int, c: Any, where: str) -> dict[str, Any]:
    if not isinstance(c, Mapping):
        raise StudyError(f"{where}: checks[{i}] must be a mapping, got {type(c).__name__}")
    c = dict(c)
    kind = c.get("kind")
    if kind not in KINDS:
        raise StudyError(f"{where}: checks[{i}].kind={kind!r} is not a known kind (allowed: {', '.join(KINDS)})")
    required, optional, expects = KINDS[kind]
    missing = sorted(required - set(c))
    if missing:
        raise StudyError(f"{where}: checks[{i}] ({kind}) is missing field(s) {missing} "
                         f"(required: {sorted(required)})")
    unknown = sorted(set(c) - required - optional - COMMON_OPTIONAL - {"kind"})
    if unknown:
        raise StudyError(f"{where}: checks[{i}] ({kind}) has unknown field(s) {unknown} "
                         f"(allowed: {sorted(required | optional | COMMON_OPTIONAL)})")
    if c["expect"] not in expects:
        raise StudyError(f"{where}: checks[{i}].expect={c['expect']!r} is not allowed for {kind} "
                         f"(allowed: {', '.join(expects)})")
    for key in ("bench", "downstream", "metric", "param"):
        if key in c and not (isinstance(c[key], str) and c[key]):
            raise StudyError(f"{where}: checks[{i}].{key} must be a non-empty string, got {c[key]!r}")
    if kind == "correlation":
        c.setdefault("method", "pearson")
        if c["method"] not in METHODS:
            raise StudyError(f"{where}: checks[{i}].method={c['method']!r} is not allowed "
                             f"(allowed: {', '.join(METHODS)})")
    if kind == "group_diff":
        for key in ("a", "b"):
            if not _scalar(c[key]):
                raise StudyError(f"{where}: checks[{i}].{key} must be a scalar param value, got {c[key]!r}")
        if _same_value(c["a"], c["b"]):
            raise StudyError(f"{where}: checks[{i}]: a and b are the same value ({c['a']!r})")
        if "match" in c and not (isinstance(c["match"], list) and all(isinstance(m, str) for m in c["match"])):
            raise StudyError(f"{where}: checks[{i}].match must be a list of param names, got {c['match']!r}")
    if kind == "metric_diff":
        for key in ("a", "b"):
            if not (isinstance(c[key], str) and c[key]):
                raise StudyError(f"{where}: checks[{i}].{key} must be a metric name, got {c[key]!r}")
        if c["a"] == c["b"]:
            raise StudyError(f"{where}: checks[{i}]: a and b are the same metric ({c['a']!r})")
    if kind == "rank":
        order = c["order"]
        if not (isinstance(order, list) and len(order) >= 2 and all(_scalar(v) for v in order)):
            raise StudyError(f"{where}: checks[{i}].order must be a list of at least 2 param values, got {order!r}")
    if "where" in c:
        w = c["where"]
        if not isinstance(w, Mapping) or not all(
            isinstance(k, str) and (_scalar(v) or (isinstance(v, list) and v and all(_scalar(x) for x in v)))
            for k, v in w.items()
        ):
            raise StudyError(f"{where}: checks[{i}].where must map param names to a value or a list of values, "
                             f"got {w!r}")
    if "min_n" in c and not (isinstance(c["min_n"], int) and not isinstance(c["min_n"], bool) and c["min_n"] >= 1):
        raise StudyError(f"{where}: checks[{i}].min_n must be a positive integer, got {c['min_n']!r}")
    for key in ("name", "paper", "note"):
        if key in c and not isinstance(c[key], str):
            raise StudyError(f"{where}: checks[{i}].{key} must be a string, got {c[key]!r}")
    c.setdefault("name", default_check_name(c))
    return c


def default_check_name(c: Mapping[str, Any]) -> str:
    kind = c["kind"]
    if kind == "correlation":
        return f"{c.get('method', 'pearson')}({c['bench']}, {c['downstream']})"
    if kind == "group_diff":
        return f"{c['metric']}: {c['param']}={c['a']} vs {c['b']}"
    if kind == "metric_diff":
        return f"{c['a']} vs {c['b']}"
    return f"{c['metric']} by {c['param']}"


def study_from_dict(data: Any, where: str = "<study>") -> Study:
    """Validate a parsed study mapping (see the module docstring) and return a :class:`Study`."""
    if not isinstance(data, Mapping):
        raise StudyError(f"{where}: a study file must be a YAML mapping, got {type(data).__name__}")
    missing = [k for k in TOP_REQUIRED if k not in data]
    if missing:
        raise StudyError(f"{where}: missing field(s) {missing} (required: {list(TOP_REQUIRED)})")
    unknown = sorted(set(data) - set(TOP_REQUIRED) - set(TOP_OPTIONAL))
    if unknown:
        raise StudyError(f"{where}: unknown field(s) {unknown} (allowed: {list(TOP_REQUIRED + TOP_OPTIONAL)})")
    for key in ("sweep", "command", "paper", "finding"):
        if not (isinstance(data[key], str) and data[key].strip()):
            raise StudyError(f"{where}: {key} must be a non-empty string, got {data[key]!r}")
    sweep = data["sweep"].strip()
    if f"+sweep={sweep}" not in data["command"].split():
        raise StudyError(f"{where}: command {data['command']!r} does not run +sweep={sweep}")
    pn = data["paper_numbers"]
    if not isinstance(pn, Mapping) or not isinstance(pn.get("source"), str) or not pn["source"].strip():
        raise StudyError(f"{where}: paper_numbers must be a mapping with a 'source' (the section read), got {pn!r}")
    checks = data["checks"]
    if not isinstance(checks, list) or not checks:
        raise StudyError(f"{where}: checks must be a non-empty list")
    checks = [_validate_check(i, c, where) for i, c in enumerate(checks)]
    names = [c["name"] for c in checks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"{where}: duplicate check name(s) {dup}; give each check a distinct 'name'")
    notes = data.get("notes")
    return Study(path=where, sweep=sweep, command=data["command"].strip(), paper=data["paper"].strip(),
                 finding=" ".join(data["finding"].split()), paper_numbers=dict(pn), checks=checks,
                 notes=notes if isinstance(notes, str) else None)


def resolve_study_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``sweeps/<path>.yaml`` for a bare study name."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and len(p.parts) == 1:
        alt = Path("sweeps") / f"{p.name}.yaml"
        if alt.exists():
            return alt
    return p


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study YAML file; raises :class:`StudyError` with a one-line message."""
    import yaml

    p = resolve_study_path(path)
    where = str(p)
    try:
        text = p.read_text()
    except OSError as e:
        raise StudyError(f"{where}: cannot read study file ({e.strerror or e})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudyError(f"{where}: not valid YAML ({first})") from e
    return study_from_dict(data, where)


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _same_value(x: Any, y: Any) -> bool:
    if x is None or y is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(y, float) and math.isnan(y)):
        return False
    nx, ny = _num(x), _num(y)
    if nx is not None and ny is not None:
        return math.isclose(nx, ny, rel_tol=1e-9, abs_tol=1e-12)
    return str(x).strip().lower() == str(y).strip().lower()


def _is(series: pd.Series, value: Any) -> np.ndarray:
    return np.array([_same_value(v, value) for v in series], dtype=bool)


def param_column(name: str) -> str:
    return name if name.startswith("param:") else f"param:{name}"


def _numeric(table: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _apply_where(table: pd.DataFrame, where: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[str]]:
    """Rows matching every ``param: value(s)`` of ``where``; also the params that are absent."""
    if not where:
        return table, []
    absent = [k for k in where if param_column(k) not in table.columns]
    if absent:
        return table.iloc[0:0], absent
    mask = np.ones(len(table), dtype=bool)
    for k, v in where.items():
        values = v if isinstance(v, list) else [v]
        col = table[param_column(k)]
        mask &= np.any([_is(col, x) for x in values], axis=0) if len(table) else mask
    return table[mask], []


def _verdict(value: float, intervals: Sequence[tuple[float, float]], n: int, min_n: int, sign: int,
             units: int | None = None) -> tuple[str, str]:
    """Verdict from the point value and its interval(s): every interval must exclude 0 on one side.

    ``n`` is the number of pairs / configs; ``units`` the independent units behind the interval (default ``n``;
    more with replicate-level intervals). Fewer than ``min_n`` or :data:`MIN_UNITS` of them: no verdict."""
    units = n if units is None else units
    if n < min_n:
        return N_TOO_SMALL, f"n={n} < min_n={min_n}"
    if units < MIN_UNITS:
        return N_TOO_SMALL, f"{units} unit(s) < {MIN_UNITS}: needs >= {MIN_UNITS} pairs/configs or seed replicates"
    if math.isnan(value) or not intervals or any(math.isnan(v) for iv in intervals for v in iv):
        return "inconclusive", "no CI (constant values or too few usable resamples)"
    if any(lo <= 0.0 <= hi for lo, hi in intervals):
        return "inconclusive", "CI spans 0"
    sides = {lo > 0 for lo, _ in intervals}
    if len(sides) > 1:
        return "inconclusive", "intervals disagree in sign"
    return ("agrees", "") if sides.pop() == (sign > 0) else ("disagrees", "")


def _percentile(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


def _result(c: Mapping[str, Any], paper: str) -> CheckResult:
    return CheckResult(name=c["name"], kind=c["kind"], expect=c["expect"], paper=paper, check=dict(c))


def _paper_text(c: Mapping[str, Any]) -> str:
    if c.get("paper"):
        return " ".join(str(c["paper"]).split())
    kind, e = c["kind"], c["expect"]
    if kind == "correlation":
        return f"{c['bench']} vs {c['downstream']}: {c.get('method', 'pearson')} r {'>' if e == 'positive' else '<'} 0"
    if kind == "group_diff":
        return f"{c['metric']}: {c['param']}={c['a']} {'>' if e == 'a_greater' else '<'} {c['b']}"
    if kind == "metric_diff":
        return f"{c['a']} {'>' if e == 'a_greater' else '<'} {c['b']} (same trial)"
    return f"{c['metric']} {e} along {c['param']} {list(c['order'])}"


def _two_level(res: CheckResult, frame: pd.DataFrame, x: str, y: str, method: str, n_boot: int, seed: int,
               min_n: int, sign: int) -> CheckResult:
    """Fill ``res`` from :func:`rmexp.replicates.correlate_two_level` (config means; bootstrap + Fisher z)."""
    from rmexp.replicates import correlate_two_level

    row = correlate_two_level(frame, x, y, method, n_boot=n_boot, seed=seed)
    res.n = row["n"]
    res.value, res.ci_lo, res.ci_hi = row["r"], row["boot_lo"], row["boot_hi"]
    reps = row["min_replicates"]
    res.ci_method = ("two-stage bootstrap (configs, seeds)" if reps >= 2 else "bootstrap over configs") + (
        " + Fisher z" if res.n >= 4 else "")
    intervals = [(row["boot_lo"], row["boot_hi"])]
    if res.n >= 4:
        intervals.append((row["fisher_lo"], row["fisher_hi"]))
    res.verdict, why = _verdict(res.value, intervals, res.n, min_n, sign)
    fisher = f"Fisher z [{_f(row['fisher_lo'])}, {_f(row['fisher_hi'])}]" if res.n >= 4 else ""
    res.detail = "; ".join(x for x in (f"{row['n_trials']} trials", fisher, why) if x)
    return res


def _absent(res: CheckResult, t: pd.DataFrame, metrics) -> bool:
    """Whether a metric the check needs is missing from the trials (then `res` says which)."""
    absent = [m for m in metrics if m not in t.columns]
    if absent:
        res.detail = f"not in trials: {', '.join(absent)}"
    return bool(absent)


def _eval_correlation(c, t: pd.DataFrame, n_boot: int, seed: int) -> CheckResult:
    res = _result(c, _paper_text(c))
    if _absent(res, t, (c["bench"], c["downstream"])):
        return res
    ok = np.isfinite(_numeric(t, c["bench"])) & np.isfinite(_numeric(t, c["downstream"]))
    if not ok.any():
        res.detail = "no trial has both metrics"
        return res
    sign = 1 if c["expect"] == "positive" else -1
    return _two_level(res, t, c["bench"], c["downstream"], c.get("method", "pearson"), n_boot, seed,
                      c.get("min_n", DEFAULT_MIN_N["correlation"]), sign)


def _eval_rank(c, t: pd.DataFrame, n_boot: int, seed: int) -> CheckResult:
    res = _result(c, _paper_text(c))
    pcol = param_column(c["param"])
    if _absent(res, t, (c["metric"], pcol)):
        return res
    pos = np.full(len(t), np.nan)
    for i, v in enumerate(c["order"]):
        pos[_is(t[pcol], v)] = i
    y = _numeric(t, c["metric"])
    keep = np.isfinite(pos) & np.isfinite(y)
    if not keep.any():
        res.detail = f"no trial with {c['param']} in {list(c['order'])} and a {c['metric']} value"
        return res
    frame = t[[col for col in t.columns if str(col).startswith("param:")]].assign(__position=pos, __metric=y)
    sign = 1 if c["expect"] == "increasing" else -1
    _two_level(res, frame[keep], "__position", "__metric", "spearman", n_boot, seed,
               c.get("min_n", DEFAULT_MIN_N["rank"]), sign)
    levels = len(set(pos[keep].tolist()))
    if levels < 2:
        res.verdict = "inconclusive"
        res.detail = f"only {levels} of the {len(c['order'])} levels present"
    res.detail = "; ".join(x for x in (f"{levels} levels", res.detail) if x)
    return res


def _eval_group_diff(c, t: pd.DataFrame, n_boot: int, seed: int) -> CheckResult:
    from rmexp.replicates import SEED_PARAM
    from rmexp.stats import two_stage_means

    res = _result(c, _paper_text(c))
    pcol = param_column(c["param"])
    absent = [x for x, ok in ((c["metric"], c["metric"] in t.columns), (pcol, pcol in t.columns)) if not ok]
    match = c.get("match")
    if match is not None:
        absent += [param_column(m) for m in match if param_column(m) not in t.columns]
    if absent:
        res.detail = f"not in trials: {', '.join(absent)}"
        return res
    y = _numeric(t, c["metric"])
    in_a, in_b = _is(t[pcol], c["a"]) & np.isfinite(y), _is(t[pcol], c["b"]) & np.isfinite(y)
    na, nb = int(in_a.sum()), int(in_b.sum())
    min_n = c.get("min_n", DEFAULT_MIN_N["group_diff"])
    if na == 0 or nb == 0:
        res.verdict = N_TOO_SMALL
        res.n = min(na, nb)
        res.detail = f"{c['param']}={c['a']}: {na} trials, {c['param']}={c['b']}: {nb} trials"
        return res

    if match is None:  # every other param that varies among the compared trials, except the replicate seed
        sub = t[in_a | in_b]
        match = [col[len("param:"):] for col in t.columns
                 if col.startswith("param:") and col not in (pcol, SEED_PARAM)
                 and sub[col].astype(str).nunique(dropna=False) > 1]
    rng = np.random.default_rng(seed)
    cells: list[tuple[np.ndarray, np.ndarray]] = []
    if match:
        keys = t[[param_column(m) for m in match]].astype(str).agg("\x1f".join, axis=1).to_numpy()
        for k in dict.fromkeys(keys[in_a | in_b]):
            sel = keys == k
            if (sel & in_a).any() and (sel & in_b).any():
                cells.append((y[sel & in_a], y[sel & in_b]))
    if cells:
        res.n = len(cells)
        res.value = float(np.mean([a.mean() - b.mean() for a, b in cells]))
        reps = min(min(a.size, b.size) for a, b in cells)
        units = max(res.n, sum(min(a.size, b.size) for a, b in cells)) if reps >= 2 else res.n
        if n_boot and n_boot > 0:
            choice = rng.integers(0, res.n, size=(n_boot, res.n))
            ma = two_stage_means([a[:, None] for a, _ in cells], n_boot, rng, choice)[..., 0]
            mb = two_stage_means([b[:, None] for _, b in cells], n_boot, rng, choice)[..., 0]
            res.ci_lo, res.ci_hi = _percentile((ma - mb).mean(axis=1))
        res.ci_method = "two-stage bootstrap (pairs, seeds)" if reps >= 2 else "bootstrap over pairs"
        how = f"paired on {', '.join(match)}: {res.n} pairs" + (f", >= {reps} trials per arm" if reps >= 2 else "")
    else:
        ya, yb = y[in_a], y[in_b]
        res.n = units = min(na, nb)
        res.value = float(ya.mean() - yb.mean())
        if n_boot and n_boot > 0:
            ba = ya[rng.integers(0, na, size=(n_boot, na))].mean(axis=1)
            bb = yb[rng.integers(0, nb, size=(n_boot, nb))].mean(axis=1)
            res.ci_lo, res.ci_hi = _percentile(ba - bb)
        res.ci_method = "bootstrap within each group (unpaired)"
        how = f"unpaired: {na} vs {nb} trials" + (f" (none match on {', '.join(match)})" if match else "")
    sign = 1 if c["expect"] == "a_greater" else -1
    res.verdict, why = _verdict(res.value, [(res.ci_lo, res.ci_hi)], res.n, min_n, sign, units)
    res.detail = "; ".join(x for x in (how, why) if x)
    return res


def _eval_metric_diff(c, t: pd.DataFrame, n_boot: int, seed: int) -> CheckResult:
    res = _result(c, _paper_text(c))
    if _absent(res, t, (c["a"], c["b"])):
        return res
    d = _numeric(t, c["a"]) - _numeric(t, c["b"])
    d = d[np.isfinite(d)]
    res.n = int(d.size)
    if res.n == 0:
        res.detail = "no trial has both metrics"
        return res
    res.value = float(d.mean())
    if n_boot and n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
        res.ci_lo, res.ci_hi = _percentile(d[idx].mean(axis=1))
        res.ci_method = "bootstrap over trials (paired within each)"
    sign = 1 if c["expect"] == "a_greater" else -1
    res.verdict, why = _verdict(res.value, [(res.ci_lo, res.ci_hi)], res.n, c.get("min_n", DEFAULT_MIN_N["metric_diff"]), sign)
    res.detail = "; ".join(x for x in (f"paired within {res.n} trials", why) if x)
    return res


_EVALUATORS = {"correlation": _eval_correlation, "group_diff": _eval_group_diff, "rank": _eval_rank,
               "metric_diff": _eval_metric_diff}


def evaluate_check(check: Mapping[str, Any], trials: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> CheckResult:
    """Evaluate one (validated) check on a trials table (one row per trial, ``param:<name>`` and metric columns)."""
    c = dict(check)
    c.setdefault("name", default_check_name(c))
    t, absent = _apply_where(trials, c.get("where"))
    if absent:
        res = _result(c, _paper_text(c))
        res.detail = "not in trials: " + ", ".join(param_column(a) for a in absent)
        return res
    return _EVALUATORS[c["kind"]](c, t.reset_index(drop=True), n_boot, seed)


def evaluate(study: Study, trials_df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> list[CheckResult]:
    """One :class:`CheckResult` per check of ``study``, in order."""
    return [evaluate_check(c, trials_df, n_boot=n_boot, seed=seed) for c in study.checks]


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


def format_results(results: Sequence[CheckResult], study: Study | None = None, trials: pd.DataFrame | None = None) -> str:
    """A plain-text report: the study header (with ``study``), then one row per check:
    check | what the paper says | what the sweep measured | verdict, and a verdict count."""
    lines: list[str] = []
    if study is not None:
        lines.append(f"study {study.sweep} ({study.path}): {study.paper}")
        lines.extend(textwrap.wrap(f"finding: {study.finding}", 120, subsequent_indent="  "))
        if trials is not None:
            parent = trials.attrs.get("parent_run_id")
            lines.append(f"sweep: experiment {study.sweep!r}" + (f", parent run {parent}" if parent else "")
                         + f", {len(trials)} finished trials")
        lines.append("")
    header = ["check", "paper says", "sweep measured", "n", "CI method", "verdict"]
    body = [[r.name, r.paper, r.measured(), str(r.n), r.ci_method or "-", r.verdict] for r in results]
    caps = [36, 40, 46, 3, 22, 14]
    widths = [min(cap, max([len(h)] + [len(b[i]) for b in body])) for i, (h, cap) in enumerate(zip(header, caps))]

    def fmt(cells):
        wrapped = [textwrap.wrap(c, w, break_long_words=True, break_on_hyphens=False) or [""]
                   for c, w in zip(cells, widths)]
        out = []
        for k in range(max(len(w) for w in wrapped)):
            out.append("  ".join((w[k] if k < len(w) else "").ljust(width)
                                 for w, width in zip(wrapped, widths)).rstrip())
        return out

    lines.extend(fmt(header))
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.extend(fmt(b))
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    lines.append("")
    lines.append(", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    return "\n".join(lines)


def results_json(study: Study, results: Sequence[CheckResult], trials: pd.DataFrame | None = None) -> dict[str, Any]:
    return {
        "study": study.path,
        "sweep": study.sweep,
        "paper": study.paper,
        "finding": study.finding,
        "paper_numbers": study.paper_numbers,
        "parent_run_id": None if trials is None else trials.attrs.get("parent_run_id"),
        "n_trials": None if trials is None else len(trials),
        "results": [r.to_dict() for r in results],
    }


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rmexp.study",
        description="Check a paper's finding (a study in sweeps/) against a sweep's MLflow trials.",
    )
    ap.add_argument("study", help="study file, e.g. sweeps/epochs.yaml (or a bare name: epochs)")
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///<abs cwd>/mlflow.db")
    ap.add_argument("--parent-run-id", default=None, help="default: the latest sweep (parent) run")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        study = load_study(args.study)  # validated before anything is loaded
    except StudyError as e:
        print(f"rmexp.study: error: {e}", file=sys.stderr)
        return 2

    from rmexp.analyze import AnalyzeError, default_tracking_uri, load_trials

    uri = args.tracking_uri or default_tracking_uri()
    try:
        trials = load_trials(study.sweep, uri, args.parent_run_id)
    except AnalyzeError as e:
        print(f"rmexp.study: error: {e} (tracking URI {uri}; run `{study.command}` first)", file=sys.stderr)
        return 2
    results = evaluate(study, trials, n_boot=args.n_boot, seed=args.seed)
    print(format_results(results, study, trials))
    if trials.empty:
        print("note: the sweep has no FINISHED trials yet", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results_json(study, results, trials), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
