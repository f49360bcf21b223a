"""Plug-in discovery: import every module of a package, so each registers itself (RM kinds, downstream methods)."""
from __future__ import annotations

import importlib
import pkgutil


def discover(package: str, path: list[str], first: tuple[str, ...] = ()) -> None:
    """Import `first` (in that order), then the package's other public modules in name order."""
    names = [info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_")]
    for name in [*first, *sorted(set(names) - set(first))]:
        importlib.import_module(f"{package}.{name}")
