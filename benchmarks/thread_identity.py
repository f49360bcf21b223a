"""Do 1 and 2 torch threads give the same metrics? One tiny-preset trial per thread count, each in a fresh cache.

    .venv/bin/python benchmarks/thread_identity.py            # ~1 min on 2 idle cores (much longer when shared)

Prints how many metrics differ and the largest differences. The answer (they differ in the last bits, so the
thread count is part of every cache key and of the trial key) is recorded in `rmexp.config.torch_threads`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, sys, torch
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.conftest import compose_config
from rmexp.trial import run_trial
n, cache = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(n)
cfg = compose_config(["preset=tiny", f"cache_dir={{cache}}", f"threads={{n}}"])
res = run_trial(cfg, Path(cache) / "out", progress=lambda m: None)
print(json.dumps({{k: v for k, v in res.metrics.items() if not k.startswith("time/") and "seconds" not in k
                  and "tokens_per_s" not in k}}))
"""


def main() -> int:
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            p = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(n), f"{tmp}/c{n}"],
                               capture_output=True, text=True, check=True, cwd=ROOT)
            runs[n] = json.loads(p.stdout.strip().splitlines()[-1])
    a, b = runs[1], runs[2]
    diff = sorted((abs(a[k] - b[k]), k) for k in a if a[k] != b[k])
    print(f"{len(diff)} of {len(a)} metrics differ between 1 and 2 torch threads")
    for d, k in diff[::-1][:8]:
        print(f"  {k}: {a[k]:.6f} vs {b[k]:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
