"""The scorer contract every RM kind implements, and the registry of kinds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from rmexp.world.core import World


@dataclass
class ValueInit:
    """What PPO's value model starts from: a sequence-classification model and its reward offset."""
    model: torch.nn.Module
    offset: float


class Scorer(Protocol):
    kind: str
    tok: PreTrainedTokenizerBase

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> np.ndarray: ...

    def describe(self) -> dict: ...

    def value_init(self) -> ValueInit | None: ...


@dataclass(frozen=True)
class RMKind:
    name: str
    options: type
    build: Callable[["RMContext"], Scorer]


@dataclass
class RMContext:
    cfg: DictConfig
    world: World
    base: Path
    prefs: list[dict]
    cache: Path
    progress: bool


RM_KINDS: dict[str, RMKind] = {}


def register_rm_kind(kind: RMKind) -> RMKind:
    if kind.name in RM_KINDS and RM_KINDS[kind.name] is not kind:
        raise ValueError(f"RM kind {kind.name!r} is registered twice")
    RM_KINDS[kind.name] = kind
    return kind
