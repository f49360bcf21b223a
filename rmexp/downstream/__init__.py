"""Downstream methods: what a trial does with its RM (best-of-N, PPO, ...), one module each, found by `discover`.

The trial runs the enabled ones (``downstream.<name>.enabled``) in registry order (module name order);
`rmexp.analyze` and the sweep summaries read metric prefixes and outcomes from :data:`DOWNSTREAM`.
"""
from __future__ import annotations

from typing import Iterable

from rmexp.downstream.base import DOWNSTREAM, DownstreamContext, DownstreamMethod, StageOutput, register_downstream
from rmexp.discovery import discover

# Registry order is run order: BoN before PPO (as before), the other methods after them in module-name order.
discover(__name__, __path__, first=("bon", "ppo"))


def method_of(metric: str) -> DownstreamMethod | None:
    """The method whose prefix `metric` carries, or None."""
    return next((m for m in DOWNSTREAM.values() if str(metric).startswith(m.prefix)), None)


def is_outcome(metric: str) -> bool:
    """A downstream OUTCOME of some method (diagnostics such as ``ppo/kl_coef`` are not)."""
    m = method_of(metric)
    return m is not None and m.is_outcome(metric)


def is_rm_outcome(metric: str) -> bool:
    """An outcome that measures the RM: outcomes of methods with uses_rm=False (reference lines) are not."""
    m = method_of(metric)
    return m is not None and m.uses_rm and m.is_outcome(metric)


def headline_metrics(names: Iterable[str], rm_only: bool = False) -> list[str]:
    """Each method's headline outcomes present in `names`, in registry order."""
    names = list(names)
    return [h for m in DOWNSTREAM.values() if m.uses_rm or not rm_only for h in m.headline_metrics(names)]


__all__ = ["DOWNSTREAM", "DownstreamContext", "DownstreamMethod", "StageOutput", "register_downstream",
           "method_of", "is_outcome", "is_rm_outcome", "headline_metrics"]
