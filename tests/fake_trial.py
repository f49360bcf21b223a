"""A fast stand-in for `rmexp.trial.run_trial` in driver/tracking tests.

Metrics are simple functions of the config (so correlations across a sweep are well defined), the call is
recorded in ``fake_calls.txt`` in the working directory (Ray workers are other processes: a file is how a test
counts calls), and ``cfg.fail_stage`` makes it raise, like the real trial; so does ``train.seed=13`` (a failure that,
unlike the test hook, is part of the trial's identity, so one sweep can hold failing and finishing trials). A trial
with ``train.weight_decay > 0``
waits while a file ``block`` exists in the working directory (to interrupt a sweep mid-way).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from omegaconf import DictConfig

CALLS_FILE = "fake_calls.txt"
FAILING_SEED = 13  # train.seed that makes the fake trial raise
SIZES = {"xs": 0, "s": 1, "m": 2, "l": 3, "xl": 4}


class FakeStageError(RuntimeError):
    pass


def fake_metrics(cfg: DictConfig) -> dict[str, float]:
    e = int(cfg.train.epochs)
    s = SIZES.get(str(cfg.model.size), 0)
    fam = 1.0 if cfg.model.family == "llama" else 0.0
    noise = float(cfg.data.label_noise)
    rb2 = 0.5 + 0.1 * e + 0.02 * s + 0.01 * fam - 0.2 * noise
    return {
        "rb2/overall": rb2,
        "rb2/Precise IF": 0.4 + 0.05 * e + 0.03 * fam,
        "rb1/overall": 0.6 + 0.05 * e - 0.02 * fam,
        "eval/acc": 0.7 + 0.03 * e + 0.01 * s,
        "bon/gain_16": 0.3 * rb2 + 0.05 * fam * e,
        "bon/gold_1": 0.2,
        "train/loss": 0.7 - 0.1 * e,
    }


def fake_trial(cfg: DictConfig, out_dir: Path, progress=None):
    out_dir = Path(out_dir)
    with open(Path.cwd() / CALLS_FILE, "a") as f:
        f.write(f"{cfg.model.name} {cfg.train.epochs} {os.getpid()}\n")
    if progress is not None:
        progress(f"fake trial of {cfg.model.name}")
    if cfg.fail_stage:
        raise FakeStageError(f"fake failure in stage {cfg.fail_stage}")
    if cfg.train.seed == FAILING_SEED:
        raise FakeStageError(f"fake failure with train.seed={FAILING_SEED}")
    if cfg.train.weight_decay > 0:  # a slow trial: waits while the file `block` exists in the working directory
        t0 = time.time()
        while (Path.cwd() / "block").exists() and time.time() - t0 < 60:
            time.sleep(0.05)
    from rmexp.trial import TrialResult

    metrics = fake_metrics(cfg)
    e = int(cfg.train.epochs)
    history = {"train/loss": [(i, 0.7 - 0.1 * (i + 1) / 2) for i in range(2 * e)]}
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    scores = out_dir / "rb2_scores.jsonl"
    scores.write_text(json.dumps({"id": 0, "score": metrics["rb2/overall"]}) + "\n")
    plot = out_dir / "plots" / "curve.txt"
    plot.write_text("a plot\n")
    from rmexp.tracking import describe_dataset

    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(int(cfg.data.size) % 7 + 3)]
    datasets = [describe_dataset("preferences", rows, {"generator": "fake_trial"}, "train")]
    return TrialResult(metrics=metrics, params={"model": cfg.model.name, "train.epochs": str(e)},
                       history=history, artifacts=[scores, plot], datasets=datasets)


def dying_trial(cfg: DictConfig, out_dir: Path, progress=None):
    """Kills its own process (a system failure, as when the OOM killer ends a worker) in the first trial with
    ``train.margin > 0`` that runs in this working directory (the file ``died`` keeps its pid); otherwise
    `fake_trial`."""
    marker = Path.cwd() / "died"
    if cfg.train.margin > 0 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return fake_trial(cfg, out_dir, progress)


def slow_first_trial(cfg: DictConfig, out_dir: Path, progress=None):
    """`fake_trial`, but the trial with ``train.epochs == 1`` first waits while a file ``block`` exists in the
    working directory (at most 60 s): one slow trial beside fast ones."""
    t0 = time.time()
    while cfg.train.epochs == 1 and (Path.cwd() / "block").exists() and time.time() - t0 < 60:
        time.sleep(0.05)
    return fake_trial(cfg, out_dir, progress)
