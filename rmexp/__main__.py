"""Command line: one trial, or a sweep.

    python -m rmexp                          # one trial on the toy world -> one MLflow run
    python -m rmexp model=toy_gpt2_s train.epochs=2 preset=tiny
    python -m rmexp +sweep=smoke             # a sweep (conf/sweep/smoke.yaml): Ray trials, MLflow parent run
    python -m rmexp --cfg job                # print the resolved config and exit

Exit status: 0 on success; 1 when a trial failed (a sweep finishes its other trials first) or Hydra refused an
override; 2 for a bad config value (one line ``error: ...`` on stderr, before any work starts); 130 on Ctrl-C, 143 on SIGTERM (the runs are ended KILLED either way).
"""
from __future__ import annotations

import os
import sys

# Ray merges "similar" lines of different workers (words with digits, like a trial's key, are ignored when
# comparing) and prints them late; each trial's progress lines should show as they come. Read at Ray import.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rmexp.config import ConfigError, validate  # noqa: E402


def _error(msg: str) -> None:
    msg = msg.strip()
    if msg.startswith("config error: "):
        msg = msg[len("config error: "):]
    print(f"error: {' '.join(msg.splitlines())}", file=sys.stderr, flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rmexp.tracking import interrupt_on_signals

    try:
        with interrupt_on_signals():  # SIGTERM/SIGINT unwind: runs ended KILLED, temp dirs removed
            validate(cfg)
            if cfg.sweep.name:
                from rmexp.sweep import run_sweep

                result = run_sweep(cfg)
                if not result.ok:
                    sys.exit(1)
            else:
                import torch

                from rmexp.tracking import run_single

                torch.set_num_threads(cfg.threads)
                run_single(cfg)
    except ConfigError as e:
        _error(str(e))
        sys.exit(2)
    except KeyboardInterrupt as e:
        import signal

        from rmexp.tracking import interrupt_signal

        signum = interrupt_signal(e)
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


if __name__ == "__main__":
    main()
