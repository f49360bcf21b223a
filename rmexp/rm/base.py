"""The contract every reward-model kind implements, and the registry that finds the kinds.

A kind is one module in ``rmexp/rm/`` that calls :func:`register_rm_kind` at import, plus one config file
``conf/rm/<name>.yaml`` holding ``kind: <name>`` and the defaults of its options dataclass. :func:`discover`
imports every module of the package (pkgutil), so no other file keeps a list of kinds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from rmexp.discovery import discover  # noqa: F401  (re-exported: the package imports its kinds with it)

if TYPE_CHECKING:  # the contract names these types; importing them here would load torch for `--cfg job`
    import numpy as np
    from omegaconf import DictConfig
    from transformers import PreTrainedTokenizerBase

    from rmexp.world.core import World


@dataclass
class ValueInit:
    """How PPO initialises its value model from a scorer: a sequence-classification model whose score head,
    read at a token, is the reward of the text so far, and the offset subtracted from its raw scores."""
    model: Any      # AutoModelForSequenceClassification
    offset: float


@runtime_checkable
class Scorer(Protocol):
    kind: str                          # "classifier", "dpo", "judge", "orm", "prm", "ensemble"
    tok: "PreTrainedTokenizerBase"     # the tokenizer the scorer reads text with

    def score(self, prompts: list[str], responses: list[str], batch_tokens: int = 4096) -> "np.ndarray":
        """float64 rewards, one per (prompt, response); higher = better; finite."""

    def describe(self) -> dict:
        """{"kind": str, "params": int, "metrics": {name: float}, "history": {name: [(step, value)]}}:
        metrics are what training measured ({} if nothing was trained)."""

    def value_init(self) -> ValueInit | None:
        """The value-model initialisation PPO uses, or None when this kind has none."""


@dataclass
class RMContext:
    """Everything a kind may need, assembled once by the trial."""
    cfg: "DictConfig"
    world: "World"
    base: Path               # the base model directory (or hub id) of `cfg.model`
    prefs: list[dict]        # the trial's preference rows (prompt, chosen, rejected, ...)
    cache: Path
    progress: bool           # show progress bars


@dataclass(frozen=True)
class RMKind:
    name: str
    options: type                                  # dataclass of the kind's config keys (conf/rm/<name>.yaml)
    build: Callable[[RMContext], Scorer]           # train-or-load (cached) and return the scorer
    packed_training: bool = False                  # trains through train_reward_model: train.packing/compile apply


RM_KINDS: dict[str, RMKind] = {}


def register_rm_kind(kind: RMKind) -> RMKind:
    if not dataclasses.is_dataclass(kind.options):
        raise TypeError(f"RM kind {kind.name!r}: options must be a dataclass, got {kind.options!r}")
    if "kind" in {f.name for f in dataclasses.fields(kind.options)}:
        raise TypeError(f"RM kind {kind.name!r}: 'kind' is the selector, not an option")
    if kind.name in RM_KINDS and RM_KINDS[kind.name] is not kind:
        raise ValueError(f"RM kind {kind.name!r} is registered twice "
                         f"({RM_KINDS[kind.name].build.__module__} and {kind.build.__module__})")
    RM_KINDS[kind.name] = kind
    return kind


def rm_options(cfg: "DictConfig") -> Any:
    """The options of `cfg.rm.kind` as its dataclass (after :func:`check_rm_config`)."""
    from omegaconf import OmegaConf

    kind = RM_KINDS[cfg.rm.kind]
    values = {k: v for k, v in OmegaConf.to_container(cfg.rm, resolve=True).items() if k != "kind"}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind.options), values))


def check_rm_config(rm: Any) -> str | None:
    """Why `cfg.rm` is not a valid RM config (unknown kind, unknown or mistyped option), or None."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    values = OmegaConf.to_container(rm, resolve=True) if OmegaConf.is_config(rm) else dict(rm or {})
    name = values.pop("kind", None)
    if name not in RM_KINDS:
        return f"rm.kind={name!r} is not allowed; registered kinds: {sorted(RM_KINDS)}"
    options = RM_KINDS[name].options
    known = [f.name for f in dataclasses.fields(options)]
    for key in values:
        if key not in known:
            return (f"rm.{key}={values[key]!r} is not allowed; rm={name} has options "
                    f"{known if known else '(none)'}")
    try:
        OmegaConf.merge(OmegaConf.structured(options), values)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        return f"rm.{key}: {str(err).splitlines()[0]}"
    return None


def base_identity(base: Path | str) -> str:
    """What the base weights are, for cache keys: the content id of the zoo entry or local checkpoint (never its
    name: the same weights under two names are one model); a hub id as given (the HF cache resolves it)."""
    from rmexp.cache import content_id

    local = Path(str(base)).expanduser()
    return content_id(local) if local.is_dir() else str(base)


def rows_identity(prefs: list[dict]) -> str:
    """A hash of the preference rows themselves (not the data config that drew them), margins included."""
    from rmexp.config import config_hash

    return config_hash([[r["prompt"], r["chosen"], r["rejected"], *([r["margin"]] if "margin" in r else [])]
                        for r in prefs])
