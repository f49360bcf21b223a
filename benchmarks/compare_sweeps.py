"""Are two sweeps' trials the same computations? Compares the FINISHED trials of two parent runs, metric by metric.

    python benchmarks/compare_sweeps.py base_models 350979ff 39cbd0c0 [--tracking-uri sqlite:///mlflow.db]

Trials are matched by run name (the trial's axis values); every metric both runs have is compared for exact
equality, except timings (`time/*`, names ending in `seconds` or `_s`, names holding `per_s`), which no two runs
share. Prints one line per difference (the largest first, at most `--show`), trials or metric names only one side
has, and a last line with the counts. Exit status 0 when every compared value is equal and the trials match, 1
otherwise. docs/reproducibility.md quotes its runs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from base_draw_noise import finished_child_runs  # noqa: E402


def is_timing(name: str) -> bool:
    return name.startswith("time/") or name.endswith(("seconds", "_s")) or "per_s" in name


def compare(old: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> dict:
    """{trial: metrics} of two sweeps -> counts, differing values (largest first) and what one side lacks."""
    diffs, lacking, n = [], [], 0
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            lacking.append(f"trial {name} only in the {'old' if name in old else 'new'} sweep")
            continue
        a = {k: v for k, v in old[name].items() if not is_timing(k)}
        b = {k: v for k, v in new[name].items() if not is_timing(k)}
        lacking += [f"{name}: {k} only in the {'old' if k in a else 'new'} sweep" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            n += 1
            if a[k] != b[k] and not (math.isnan(a[k]) and math.isnan(b[k])):  # NaN equals NaN here
                diffs.append((abs(a[k] - b[k]), name, k, a[k], b[k]))
    diffs.sort(key=lambda d: (not math.isnan(d[0]), -d[0] if not math.isnan(d[0]) else 0.0, d[1], d[2]))  # NaN first
    return {"compared": n, "differ": len(diffs), "diffs": diffs, "lacking": lacking,
            "trials": (len(old), len(new))}


def finished_trials(client, experiment: str, parent_prefix: str) -> dict[str, dict[str, float]]:
    runs = finished_child_runs(client, experiment, parent_prefix)
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if r.info.run_name in out:
            raise SystemExit(f"{experiment}: two finished trials named {r.info.run_name!r} under {parent_prefix!r}")
        out[r.info.run_name] = dict(r.data.metrics)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("old_parent", help="parent run id of the first sweep (at least 8 characters)")
    ap.add_argument("new_parent", help="parent run id of the second sweep")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    ap.add_argument("--show", type=int, default=10, help="differences shown")
    a = ap.parse_args(argv)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(a.tracking_uri)
    res = compare(finished_trials(client, a.experiment, a.old_parent), finished_trials(client, a.experiment, a.new_parent))
    for line in res["lacking"]:
        print(line)
    for d, name, k, x, y in res["diffs"][:a.show]:
        print(f"{name}: {k} {x!r} -> {y!r} (|diff| {d:.3g})")
    print(f"{a.experiment}: {res['trials'][0]} / {res['trials'][1]} finished trials, {res['compared']} non-timing "
          f"values compared, {res['differ']} differ")
    return 0 if res["differ"] == 0 and not res["lacking"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
