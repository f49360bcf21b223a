"""Reading a kind's options from `cfg.rm`: its dataclass names the keys; conf/rm/<kind>.yaml holds the defaults.

Options dataclasses declare no defaults (the config file is the one place they live); unknown, missing
or mistyped keys are refused with one line naming the key and what is allowed, before any work starts.
"""
from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rmexp.config import CONF_DIR, ConfigError, ModelConfig

T = TypeVar("T")


def parse_options(cls: type[T], node: DictConfig, kind: str) -> T:
    known = [f.name for f in fields(cls)]
    given = [k for k in node if k != "kind"]
    for key in given:
        if key not in known:
            raise ConfigError(f"config error: rm.{key} is not an option of rm={kind}; its options are {known}")
    for key in known:
        if key not in given:
            raise ConfigError(f"config error: rm.{key} is missing; rm={kind} needs {known} (see conf/rm/{kind}.yaml)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), {k: node[k] for k in given})
        opts = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config error: rm={kind}: {str(err).splitlines()[0]}") from None
    check = getattr(opts, "check", None)
    if check is not None:
        check()
    return opts


def rm_config(kind: str) -> DictConfig:
    """conf/rm/<kind>.yaml as a node (what `rm=<kind>` composes into cfg.rm). Its `${model.*}` values (a kind's
    rate is the base's `model.rm_lr`) resolve against the schema's model defaults here, and against the trial's
    model once merged into a config."""
    path = CONF_DIR / "rm" / f"{kind}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "rm").glob("*.yaml"))
        raise ConfigError(f"config error: unknown rm kind {kind!r}; known kinds: {known}")
    return OmegaConf.create({"model": OmegaConf.structured(ModelConfig), "rm": OmegaConf.load(path)}).rm


def fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"config error: rm.{key}={value!r} is not allowed; {allowed}")
