"""DPO learning-rate probe on the default config (toy_llama_s_sft policy, 8000 toy pairs, one epoch).

    python benchmarks/dpo_lr_probe.py 1e-5 5e-5 2e-4 [--cache-dir DIR] [-o OVERRIDE ...]

Prints, per learning rate, held-out gold after DPO, the SFT policy's gold on the same draws, the KL to the SFT
policy, the last quarter-epoch's loss and implicit-reward accuracy, and the time. Not a test.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import rmexp.downstream.dpo  # noqa: F401 - registers dpo
from rmexp import data
from rmexp.config import CONF_DIR, validate
from rmexp.downstream import DOWNSTREAM, DownstreamContext
from rmexp.world.core import World


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lrs", nargs="+", type=float)
    ap.add_argument("--cache-dir", default=".rmexp_cache")
    ap.add_argument("--out", default="runs/dpo_lr_probe")
    ap.add_argument("-o", "--override", nargs="*", default=[], help="more Hydra overrides, e.g. preset=tiny")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    world = World(0)
    for lr in args.lrs:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"cache_dir={args.cache_dir}", "downstream.dpo.enabled=true",
                                                           *args.override, f"downstream.dpo.lr={lr}"])
        validate(cfg)
        t = time.time()
        out = DOWNSTREAM["dpo"].run(DownstreamContext(
            cfg=cfg, world=world, rm=None, cache=Path(args.cache_dir).resolve(), out_dir=Path(args.out) / f"lr{lr:g}",
            progress=False, prefs=data.preference_rows(cfg, world)))
        m = out.metrics
        print(f"lr={cfg.downstream.dpo.lr:g} gold={m['dpo/gold']:.3f} sft={m['dpo/sft_gold']:.3f} delta={m['dpo/gold_delta']:+.3f} "
              f"kl={m['dpo/kl']:.2f} loss={m['dpo/train_loss']:.3f} acc={m['dpo/train_reward_acc']:.3f} "
              f"steps={m['dpo/steps']:.0f} dpo_s={m['dpo/seconds']:.0f} wall={time.time() - t:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
