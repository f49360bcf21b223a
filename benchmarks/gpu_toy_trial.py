"""One tiny toy-world trial on a device, without MLflow or Ray, and its metrics as JSON: does `device=cuda` run
the whole trial (RM training, RewardBench and best-of-N scoring on the GPU; zoo builds and toy sampling on the
CPU) and give the CPU's numbers up to float noise?

    python benchmarks/gpu_toy_trial.py cuda results.json        # extra Hydra overrides may follow
    python benchmarks/gpu_toy_trial.py cpu results_cpu.json     # the same trial on the CPU, to compare
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    from hydra import compose, initialize_config_dir

    from rmexp.config import CONF_DIR, validate
    from rmexp.trial import run_trial

    device, out, extra = argv[0], Path(argv[1]), argv[2:]
    overrides = ["preset=tiny", f"device={device}", *extra]
    if not any(o.startswith("cache_dir=") for o in extra):  # a fresh zoo by default: nothing cached elsewhere
        overrides.append(f"cache_dir=/tmp/rmexp_cache_{device}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    t0 = time.time()
    res = run_trial(cfg, Path(f"/tmp/rmexp_trial_{device}"),
                    progress=lambda m: print(f"[{time.time() - t0:6.1f}s] {m}", flush=True))
    metrics = {k: float(v) for k, v in res.metrics.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "overrides": overrides, "seconds": time.time() - t0,
                               "metrics": metrics}, indent=1))
    print(f"wrote {out}: " + ", ".join(f"{k}={metrics[k]:.4f}" for k in ("eval/acc", "rb2/overall", "rb1/overall",
                                                                          "bon/gain_16", "train/seconds")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
