"""Guards that stop useless or poisoned work: tokenizer coverage of the data, and non-finite losses.

Both the pre-flight check (rmexp/preflight.py, before any work) and RM training (after the rows are
encoded, before the first step) call :func:`check_coverage`; training loops call :func:`check_finite`
after every step, so a diverged model raises before anything is saved or cached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


# The train.* settings that explain a diverged RM, named in the error.
RM_SETTINGS = ("lr", "schedule", "warmup_ratio", "batch_size", "grad_clip", "margin", "center_coef", "weight_decay")


def rm_settings(train) -> dict:
    return {f"train.{k}": train[k] for k in RM_SETTINGS}


class DataCoverageError(ValueError):
    """The base model's tokenizer cannot read the preference data (too many <unk>, identical pairs)."""


class NonFiniteError(FloatingPointError):
    """A loss or a result went NaN/inf; the message names the step and the settings that explain it."""


@dataclass(frozen=True)
class Coverage:
    tokens: int           # tokens of chosen and rejected, all pairs
    unk: int              # of those, the tokenizer's unknown token
    pairs: int
    identical: int        # pairs whose chosen and rejected encode to the same ids

    @property
    def unk_share(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    @property
    def identical_share(self) -> float:
        return self.identical / self.pairs if self.pairs else 0.0


def coverage(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], unk_id: int | None) -> Coverage:
    """Counts over encoded (chosen ids, rejected ids) pairs. A tokenizer without an unknown token
    (byte-level BPE) has no <unk> by construction: unk_id None counts none."""
    tokens = unk = identical = 0
    for c, r in pairs:
        tokens += len(c) + len(r)
        if unk_id is not None:
            unk += sum(1 for t in c if t == unk_id) + sum(1 for t in r if t == unk_id)
        identical += list(c) == list(r)
    return Coverage(tokens=tokens, unk=unk, pairs=len(pairs), identical=identical)


def check_coverage(cov: Coverage, max_unk_share: float, max_identical_share: float, where: str,
                   model: str) -> None:
    """Raise DataCoverageError when the shares exceed the limits (`data.max_unk_share`,
    `data.max_identical_share`): an RM trained on such pairs learns nothing and reports loss ln 2."""
    problems = []
    if cov.unk_share > max_unk_share:
        problems.append(f"{cov.unk_share:.1%} of tokens are <unk> (data.max_unk_share={max_unk_share})")
    if cov.identical_share > max_identical_share:
        problems.append(f"{cov.identical_share:.1%} of pairs ({cov.identical} of {cov.pairs}) encode chosen and "
                        f"rejected identically (data.max_identical_share={max_identical_share})")
    if problems:
        raise DataCoverageError(
            f"{where}: to the tokenizer of {model}, {' and '.join(problems)}; an RM cannot learn from such pairs. "
            f"Use a base model whose tokenizer covers the data (e.g. model=hf model.path=<a local hub model dir>), "
            f"or remove the pairs whose chosen and rejected are the same")


def check_finite(name: str, value: float, step: int, total: int, settings: dict) -> None:
    """Raise NonFiniteError if `value` (a loss at `step`) is NaN or infinite, naming `settings`."""
    if math.isfinite(value):
        return
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    raise NonFiniteError(f"{name} is {value} at step {step + 1} of {total} ({shown}); training stopped and nothing "
                         f"was saved: lower the learning rate or check the data")


def require_finite(name: str, values) -> None:
    """Results must be finite before anything is published: `values` is an array-like or a {metric: value} dict."""
    import numpy as np

    if isinstance(values, dict):
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:
            raise FloatingPointError(f"{name}: non-finite metrics {bad}; nothing is cached")
        return
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise FloatingPointError(f"{name} is not finite ({int((~np.isfinite(array)).sum())} values); nothing is cached")
