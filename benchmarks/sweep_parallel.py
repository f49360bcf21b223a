"""Sweep throughput: the smoke sweep with one trial at a time vs two in parallel on a 2-core machine.

    python benchmarks/sweep_parallel.py [--sweep smoke] [--repeats 1]

Both runs start from the same pre-built zoo (copied into fresh caches), so they train the same RMs and
draw the same samples; only the scheduling differs. Prints each wall time (the driver's own "finished in"
time, Ray start excluded, and the whole process) and the speed-up ratio. DESIGN.md's target: >= 1.7x.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(sweep: str, workdir: Path, cache: Path, max_parallel: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "rmexp", f"+sweep={sweep}", f"cache_dir={cache}", f"ray.max_parallel={max_parallel}",
           f"tracking.uri=sqlite:///{workdir}/mlflow.db"]
    start = time.time()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    total = time.time() - start
    if out.returncode != 0:
        sys.exit(f"sweep failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    m = re.search(r"all trials finished \(\d+ cached\) in (\d+):(\d+)", out.stdout + out.stderr)
    sweep_s = int(m.group(1)) * 60 + int(m.group(2)) if m else float("nan")
    return sweep_s, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="smoke")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm"
        warm.mkdir()
        print("warming the zoo (not timed) ...", flush=True)
        run(args.sweep, warm, warm / "cache", 2)
        rows = []
        for rep in range(args.repeats):
            for parallel in (1, 2):
                work = tmp / f"p{parallel}-{rep}"
                work.mkdir()
                shutil.copytree(warm / "cache" / "zoo", work / "cache" / "zoo")  # same bases, RMs retrained
                sweep_s, total = run(args.sweep, work, work / "cache", parallel)
                rows.append((parallel, sweep_s, total))
                print(f"max_parallel={parallel}: sweep {sweep_s:.0f} s, process {total:.1f} s", flush=True)
    seq = min(s for p, s, _ in rows if p == 1)
    par = min(s for p, s, _ in rows if p == 2)
    print(f"\nsweep={args.sweep} cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    print(f"sequential {seq:.0f} s | parallel {par:.0f} s | speed-up {seq / par:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
