"""Sweep wall time: a sweep with one trial at a time vs two in parallel (issue #10's target: 2 workers <= 0.6x of 1).

    python benchmarks/sweep_parallel.py [--sweep smoke] [--repeats 1] [--json out.json] [OVERRIDE ...]
    python benchmarks/sweep_parallel.py data.size=8000      # longer trials: fixed costs weigh less
    python benchmarks/sweep_parallel.py --cache-from .rmexp_cache   # the warm-up reuses that cache's bases

Every run starts from the same pre-built zoo and policy samples (a warm-up sweep builds them, untimed, and each
timed run gets a copy in a fresh cache and a fresh MLflow store), so all runs train the same RMs; only the
scheduling differs. The driver's lines are stamped on arrival, so the sweep's clock is read to the millisecond:
it starts when the driver prints the sweep's parent run (the trials are submitted right after) and stops at its
"all trials finished" line (correlations and summary included). Prints, per run, the sweep time, the whole
process, the sum of the trials' own times and when the first trial spoke; the last line holds the `ratio`
parallel / sequential (best run of each).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP_START = re.compile(r"^\[sweep \S+\] MLflow experiment .* parent run ")  # printed just before the clock starts
SWEEP_END = re.compile(r"^\[sweep \S+\] all trials finished \((\d+) cached\) in ")
TRIAL_LINE = "(trial pid="  # Ray's prefix on a trial actor's lines
TABLE_HEADER = re.compile(r"^trial\s.*\sseconds$")  # the driver's summary table: one row per trial, seconds last


def trial_seconds(lines: list[str]) -> float:
    """The sum of the FINISHED trials' own seconds in the driver's summary table (not Ray's forwarded lines,
    which a busy log monitor can deliver after the driver has finished)."""
    head = next((i for i, line in enumerate(lines) if TABLE_HEADER.match(line)), None)
    if head is None:
        raise ValueError("the sweep's summary table is missing")
    total = 0.0
    for line in lines[head + 2:]:  # after the header and its dashes
        if not line.strip():
            break
        if " FINISHED " in f" {line} ":
            total += float(line.split()[-1])  # a FINISHED trial always has its seconds
    return total


def timeline(stamped: list[tuple[float, str]]) -> dict:
    """Sweep seconds, first trial output after the clock, the trials' own seconds, from (arrival s, line) pairs."""
    start = next((t for t, line in stamped if SWEEP_START.search(line)), None)
    end = next(((t, m) for t, line in stamped if (m := SWEEP_END.search(line))), None)
    if start is None or end is None:
        raise ValueError("the sweep's start or end line is missing: did every trial finish?")
    if int(end[1].group(1)):
        raise ValueError(f"{end[1].group(1)} trials were cached: the timed run must train every trial")
    first_trial = next((t for t, line in stamped if t >= start and TRIAL_LINE in line), float("nan"))
    return {"sweep_s": end[0] - start, "first_trial_after_s": first_trial - start,
            "trial_s": trial_seconds([line for _, line in stamped])}


def run(sweep: str, workdir: Path, cache: Path, max_parallel: int, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rmexp", f"+sweep={sweep}", f"cache_dir={cache}", f"ray.max_parallel={max_parallel}",
           f"tracking.uri=sqlite:///{workdir}/mlflow.db", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    stamped: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        for line in p.stdout:
            stamped.append((time.perf_counter() - start, line.rstrip("\n")))
    total = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"sweep failed (exit {p.returncode}):\n" + "\n".join(line for _, line in stamped[-40:]))
    return {**timeline(stamped), "process_s": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="smoke")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the runs and the ratio here")
    parser.add_argument("--cache-from", type=Path, help="start the warm-up from this cache's zoo and samples")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every trial, e.g. data.size=8000")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep_parallel_") as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm"
        warm.mkdir()
        for part in ("zoo", "samples"):
            if args.cache_from is not None and (args.cache_from / part).exists():
                shutil.copytree(args.cache_from / part, warm / "cache" / part)
        print("warming the zoo and policy samples (not timed) ...", flush=True)
        run(args.sweep, warm, warm / "cache", 2, args.overrides)
        for rep in range(args.repeats):
            for parallel in (1, 2):
                work = tmp / f"p{parallel}-{rep}"
                work.mkdir()
                for part in ("zoo", "samples"):  # same bases and policy samples; every RM is retrained
                    if (warm / "cache" / part).exists():
                        shutil.copytree(warm / "cache" / part, work / "cache" / part)
                r = {"max_parallel": parallel, **run(args.sweep, work, work / "cache", parallel, args.overrides)}
                rows.append(r)
                print(f"max_parallel={parallel}: sweep {r['sweep_s']:.1f} s (first trial at +{r['first_trial_after_s']:.1f} s), "
                      f"process {r['process_s']:.1f} s, sum of trial times {r['trial_s']:.1f} s", flush=True)
    best = {p: min((r for r in rows if r["max_parallel"] == p), key=lambda r: r["sweep_s"]) for p in (1, 2)}
    seq, par = best[1]["sweep_s"], best[2]["sweep_s"]
    seq_trials = min(r["trial_s"] for r in rows if r["max_parallel"] == 1)
    par_trials = min(r["trial_s"] for r in rows if r["max_parallel"] == 2)
    load_end = os.getloadavg()[0]
    summary = {"sweep": args.sweep, "overrides": args.overrides, "cores": os.cpu_count(), "load_start": load_start,
               "load_end": load_end, "runs": rows, "sequential_s": seq, "parallel_s": par, "ratio": par / seq,
               "trial_throughput": 2 * seq_trials / par_trials}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(f"\nsweep={args.sweep} overrides={args.overrides} cores={os.cpu_count()} load {load_start:.2f} -> {load_end:.2f}")
    # Trial-level scaling: how much slower each trial gets when two share the cores (1.0 = none); the gap
    # between the trial throughput and the sweep's speed-up is fixed per-sweep work (actor start, the end).
    print(f"per-trial slowdown when 2 run at once: {par_trials / seq_trials:.2f}x "
          f"-> trial throughput {summary['trial_throughput']:.2f}x")
    print(f"ratio parallel / sequential sweep time {par:.1f} s / {seq:.1f} s = {par / seq:.2f}x (target <= 0.6x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
