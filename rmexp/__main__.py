"""Command line: one trial, or a sweep.

    python -m rmexp                          # one trial on the toy world -> one MLflow run
    python -m rmexp model=toy_gpt2_s train.epochs=2 preset=tiny
    python -m rmexp +sweep=smoke             # a sweep (conf/sweep/smoke.yaml): Ray trials, MLflow parent run
    python -m rmexp --cfg job                # print the resolved config and exit

Exit status: 0 on success; 2 for bad input found before any work starts (an unknown or mistyped key, a bad
value, a missing or unparsable file, an unusable model, data the base's tokenizer cannot read, CUDA asked for
and absent, an unreachable tracking store); 1 for a failure during work (a sweep finishes its other trials
first); 130 on Ctrl-C (SIGINT), 143 on SIGTERM, the runs ended KILLED either way. Every failure prints one line
``error: ...`` on stderr; ``verbose=true`` adds the traceback, which a failed run also keeps as ``error.txt``
in MLflow. Bad-input messages are listed in docs/bad_inputs.md.
"""
from __future__ import annotations

import os
import sys
import traceback

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
    print(f"error: {' '.join(msg.split())}", file=sys.stderr, flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rmexp.tracking import interrupt_on_signals

    work_started = False
    try:
        with interrupt_on_signals():  # SIGTERM/SIGINT unwind: runs ended KILLED, temp dirs removed
            validate(cfg)
            from rmexp.preflight import check_tracking_store
            from rmexp.tracking import tracking_uri

            check_tracking_store(tracking_uri(cfg))
            work_started = True
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
        if cfg.verbose:
            traceback.print_exc()
        _error(str(e))
        sys.exit(2)
    except KeyboardInterrupt as e:
        import signal

        from rmexp.tracking import interrupt_signal

        signum = interrupt_signal(e)
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except Exception as e:  # noqa: BLE001 - any failure during work: one line, the traceback on request
        from rmexp.tracking import error_summary

        if cfg.verbose:
            traceback.print_exc()
        where = " (traceback: verbose=true, or the MLflow run's error.txt)" if work_started else \
            " (traceback: verbose=true)"
        _error(error_summary(e) + where)
        sys.exit(1)


def cli(argv: list[str] | None = None) -> None:
    """Check the command line's overrides, then hand over to Hydra."""
    from rmexp.preflight import check_overrides

    try:
        check_overrides(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        _error(str(e))
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
