"""Downstream methods behind one contract: each method registers a `DownstreamMethod`; the trial runs the enabled
ones (`cfg.downstream.<name>.enabled`) in registry order, and the analysis reads prefixes and outcomes from
`DOWNSTREAM`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from omegaconf import DictConfig

if TYPE_CHECKING:
    from rmexp.rm.base import Scorer
    from rmexp.world.core import World


@dataclass(frozen=True)
class DownstreamMethod:
    name: str              # config key downstream.<name> and metric prefix "<name>/"
    uses_rm: bool          # False for rlvr: computed once per sweep, a reference line, not an RM outcome
    outcomes: tuple[str, ...]   # metric names (without prefix) that are downstream OUTCOMES for correlations
    run: Callable[["DownstreamContext"], "StageOutput"]


@dataclass
class DownstreamContext:
    cfg: DictConfig
    world: "World"
    rm: "Scorer | None"
    cache: Path
    out_dir: Path
    progress: bool
    prefs: list[dict] | None = None  # the trial's preference rows (dpo trains on them); None where not needed


@dataclass
class StageOutput:
    metrics: dict[str, float]
    history: dict[str, list[tuple[int, float]]]
    artifacts: list[Path]


DOWNSTREAM: dict[str, DownstreamMethod] = {}


def register_downstream(m: DownstreamMethod) -> DownstreamMethod:
    DOWNSTREAM[m.name] = m
    return m
