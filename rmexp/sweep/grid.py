"""The grid: a sweep's axes expanded into trials, each a composed and validated config.

A sweep config sets ``sweep.axes``: a mapping from a Hydra override key to a list of values. A key is a config
group (``model: [toy_llama_s, ...]``) or a dotted key (``train.epochs: [1, 2]``); values may be scalars, lists
or dicts (a dict value is *merged* into the base dict, as Hydra does). The trials are the cartesian product of
the axes, first axis slowest. ``sweep.replicates=N`` runs every grid point N times with seeds ``s, s+1, ...``
(``s`` = the invocation's seed): an innermost axis on the seed key, so the seed is part of each trial's name and
key. Any bad axis value stops the sweep here, before anything starts, with one line naming the axis and value.
"""
from __future__ import annotations

import itertools
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from rmexp import tracking as T
from rmexp.config import CONF_DIR, ConfigError, validate


# ----------------------------------------------------------------------------------------------------- grid
def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def expand_grid(axes: Mapping[str, Iterable[Any]] | DictConfig) -> list[dict[str, Any]]:
    """Cartesian product of the axes, in a stable order: axes in the given order, the first axis varying
    slowest, values in their listed order. ``{}`` gives ``[{}]`` (one trial with no axis)."""
    axes = _plain(axes) or {}
    if not isinstance(axes, Mapping):
        raise ConfigError(f"config error: sweep.axes must map override keys to lists of values, got {axes!r}")
    keys, value_lists = [], []
    for key, values in axes.items():
        values = _plain(values)
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"config error: sweep axis {key}: expected a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"config error: sweep axis {key}: the list of values is empty")
        keys.append(str(key))
        value_lists.append(list(values))
    return [dict(zip(keys, combo)) for combo in itertools.product(*value_lists)]


# ----------------------------------------------------------------------------------------------------- overrides
_PLAIN_STR = re.compile(r"[A-Za-z_][\w\-./]*")
_KEYWORDS = {"true", "false", "null", "nan", "inf", "none"}
_KEY_SPECIALS = set("\\()[]{}:=, \t'\"")


def _fmt_key(key: Any) -> str:
    return "".join("\\" + c if c in _KEY_SPECIALS else c for c in str(key))


def format_value(value: Any) -> str:
    """A value in Hydra's override grammar: ``null``, ``true``, ``3``, ``0.0003``, ``toy_llama_s``,
    ``'a b'``, ``[1,2]``, ``{Factuality:3,Precise\\ IF:1}`` (dict keys with spaces or specials are escaped)."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if _PLAIN_STR.fullmatch(value) and value.lower() not in _KEYWORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_fmt_key(k)}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise ConfigError(f"config error: cannot write {value!r} ({type(value).__name__}) as a Hydra override value")


def format_override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def _override_key(override: str) -> str | None:
    """The key or group an override sets (``+model=x`` -> ``model``), None when it cannot be parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).key_or_group
    except Exception:  # noqa: BLE001
        return None


def _strip_prefix(key: str) -> str:
    return key.lstrip("+~")


def _short_error(exc: BaseException) -> str:
    """A Hydra/OmegaConf error in one line: options listed inline, the config search path and Hydra's
    "To append to your config use +..." hint dropped, the cause (e.g. OmegaConf's message) appended."""
    text = str(exc).split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    parts: list[str] = []
    options: list[str] | None = None
    for ln in lines:
        if ln.startswith("Available options in"):
            options = []
            parts.append("; " + ln[0].lower() + ln[1:].rstrip(":") + ": ")
        elif options is not None:
            options.append(ln)
            parts[-1] = parts[-1].split(": ")[0] + ": " + ", ".join(options)
        elif not ln.startswith("To append to your config use"):
            parts.append(ln)
    msg = re.sub(r"^config error:\s*", "", " ".join(parts).replace(" ; ", "; ").strip())
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        first = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        if first and first[0] not in msg:
            msg += f" ({first[0]})"
    return msg or type(exc).__name__


# ----------------------------------------------------------------------------------------------------- trials
def trial_name(axes: Mapping[str, Any]) -> str:
    """A trial's MLflow run name: its axis values, ``model=toy_gpt2_xs,train.epochs=2`` (its key is a tag)."""
    return ",".join(T.axes_label({k: v}) for k, v in axes.items()) or "trial"


@dataclass
class TrialSpec:
    index: int                  # position in the grid
    axes: dict[str, Any]        # axis key -> value of this trial
    overrides: list[str]        # the full override list it was composed from
    cfg: DictConfig             # resolved, validated trial config
    key: str                    # trial key (identity for resume)
    name: str                   # MLflow run name: the axis values, ``model=toy_gpt2_xs,train.epochs=2``

    @property
    def label(self) -> str:
        return T.axes_label(self.axes)


SEED_KEY = "seed"  # the trial's seed; data, train and PPO seeds follow it (${seed} in conf/)


def replicate_axes(cfg: DictConfig, axes: dict[str, Any]) -> dict[str, Any]:
    """``axes`` plus the innermost seed axis ``{seed key: [s, s+1, ..., s+N-1]}`` for ``sweep.replicates=N > 1``."""
    n = int(cfg.sweep.replicates)
    if n < 1:
        raise ConfigError(f"config error: sweep.replicates={n} is not allowed; it must be >= 1")
    if n == 1:
        return axes
    key = SEED_KEY
    # The stage seeds default to ${seed}: an axis on one of them would pin it while the replicates vary `seed`.
    seeded = {key, "train.seed", "data.seed", "downstream.ppo.seed"}
    clash = [k for k in axes if _strip_prefix(k) in seeded]
    if clash:
        raise ConfigError(f"config error: sweep.replicates={n} with an axis on {_strip_prefix(clash[0])}: the replicates "
                          f"vary {key} (which the stage seeds follow) themselves; drop one of them")
    seed = int(OmegaConf.select(cfg, key))
    return {**axes, key: [seed + r for r in range(n)]}


@contextmanager
def _hydra_context():
    """Reuse the running Hydra (inside @hydra.main or a test's initialize_config_dir), else initialise on conf/."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield


def _config_error_key(exc: ConfigError) -> str | None:
    m = re.match(r"^config error: (.+?)=", str(exc))
    return m.group(1) if m else None


def _blame_axis(failing_key: str | None, axes: Mapping[str, Any]) -> str | None:
    if failing_key is None:
        return None
    for axis in axes:
        k = _strip_prefix(axis)
        if failing_key == k or failing_key.startswith(k + "."):
            return axis
    return None


def compose_trials(cfg: DictConfig, overrides: list[str] | None = None,
                   key_fn: Callable[[DictConfig], str] | None = None) -> list[TrialSpec]:
    """One composed, validated config per grid point of ``cfg.sweep.axes``.

    ``overrides``: the base overrides (default: this invocation's command line, ``HydraConfig...overrides.task``,
    which includes ``+sweep=<name>``). Raises :class:`ConfigError` naming the axis and value on any bad value,
    before any trial has started. Trials with the same key (axes that do not change the trial's identity)
    are kept once.
    """
    name = OmegaConf.select(cfg, "sweep.name")
    if not name:
        raise ConfigError("config error: sweep.name is not set; select a sweep with +sweep=<name>")
    key_fn = key_fn or T.trial_key
    axes = _plain(cfg.sweep.axes) or {}
    if not axes:
        raise ConfigError(f"config error: sweep {name!r} has no axes (sweep.axes is empty)")
    axes = replicate_axes(cfg, axes)
    grid = expand_grid(axes)
    base = list(T._cli_overrides() if overrides is None else overrides)
    axis_keys = {_strip_prefix(k) for k in axes}
    base = [o for o in base if _override_key(o) not in axis_keys]

    from hydra import compose

    composed: list[tuple[int, dict, list[str], DictConfig]] = []
    with _hydra_context():
        def attempt(ovs: list[str]) -> DictConfig:
            return compose(config_name="config", overrides=ovs)

        for index, point in enumerate(grid):
            axis_ovs = []
            for k, v in point.items():
                try:
                    axis_ovs.append(format_override(k, v))
                except ConfigError as e:
                    raise ConfigError(f"config error: sweep {name!r}, axis {k}: value {v!r} is not allowed: "
                                      f"{_short_error(e)}") from None
            ovs = base + axis_ovs
            try:
                trial_cfg = attempt(ovs)
            except Exception as e:  # noqa: BLE001 - any composition error is the config's
                # which axis? compose it alone on the base
                for (k, v), ov in zip(point.items(), axis_ovs):
                    try:
                        attempt(base + [ov])
                    except Exception as e1:  # noqa: BLE001
                        raise ConfigError(f"config error: sweep {name!r}, axis {k}: value {v!r} is not allowed: "
                                          f"{_short_error(e1)}") from None
                raise ConfigError(f"config error: sweep {name!r}, trial {T.axes_label(point)}: "
                                  f"{_short_error(e)}") from None
            try:
                validate(trial_cfg)
            except ConfigError as e:
                detail = re.sub(r"^config error:\s*", "", str(e))
                axis = _blame_axis(_config_error_key(e), point)
                if axis is not None:
                    raise ConfigError(f"config error: sweep {name!r}, axis {axis}: value {point[axis]!r} is not "
                                      f"allowed: {detail}") from None
                raise ConfigError(f"config error: sweep {name!r}, trial {T.axes_label(point)}: {detail}") from None
            composed.append((index, point, ovs, trial_cfg))

    specs: list[TrialSpec] = []
    seen: dict[str, TrialSpec] = {}
    for index, point, ovs, trial_cfg in composed:  # keys only once every trial is known to be valid
        key = key_fn(trial_cfg)
        if key in seen:
            print(f"[sweep {name}] note: trial {T.axes_label(point)} is the same trial as "
                  f"{seen[key].label} (key {key}); it runs once", flush=True)
            continue
        spec = TrialSpec(index=index, axes=dict(point), overrides=ovs, cfg=trial_cfg, key=key,
                         name=trial_name(point))
        seen[key] = spec
        specs.append(spec)
    return specs
