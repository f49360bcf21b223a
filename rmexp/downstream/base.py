"""The contract every downstream method implements (what a trial does with its RM), and its registry.

A method is one module in ``rmexp/downstream/`` that calls :func:`register_downstream` at import; its config
lives under ``downstream.<name>`` (with an ``enabled`` flag) and its metrics under the prefix ``<name>/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from rmexp.gold import GoldSource
    from rmexp.rm.base import Scorer
    from rmexp.world.core import World


@dataclass
class DownstreamContext:
    cfg: "DictConfig"
    world: "World"
    rm: "Scorer | None"      # None for a method with uses_rm=False
    cache: Path
    out_dir: Path            # where the method writes its artifacts
    progress: bool           # show progress bars
    prefs: list[dict] | None = None  # the trial's preference rows (dpo trains on them)
    gold: "GoldSource | None" = None  # eval prompts and their checker (rmexp.gold); None: built from cfg.task

    def gold_source(self) -> "GoldSource":
        """The prompts and checker every method judges by (never the World directly): task=toy or a real task."""
        if self.gold is None:
            from rmexp.gold import gold_source

            self.gold = gold_source(self.cfg, self.world)
        return self.gold


@dataclass
class StageOutput:
    metrics: dict[str, float]                                   # names carry the method's prefix ("bon/gain_16")
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class DownstreamMethod:
    name: str                   # config key downstream.<name> and metric prefix "<name>/"
    uses_rm: bool               # False (e.g. rlvr): a reference line, not an RM outcome
    outcomes: tuple[str, ...]   # metric names without the prefix (regexes allowed) that are OUTCOMES for the
                                # correlations; everything else the method logs is a diagnostic
    run: Callable[[DownstreamContext], StageOutput]
    headline: tuple[str, ...] = ()  # outcomes shown in sweep summaries; empty: its plain-named top-level outcomes
    trains_on_prompts: bool = False  # RL on the gold source's train prompts (a real task needs task.train_path)

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    def is_outcome(self, metric: str) -> bool:
        """Whether `metric` (with prefix) is one of this method's outcomes."""
        metric = str(metric)
        return metric.startswith(self.prefix) and any(
            re.fullmatch(pattern, metric[len(self.prefix):]) for pattern in self.outcomes)

    def headline_metrics(self, names: Iterable[str]) -> list[str]:
        """The headline outcomes among `names`: a pattern matching several names (``gain_\\d+``) stands for the
        one with N=16 when present, else the largest N."""
        names = set(names)
        patterns = self.headline or tuple(p for p in self.outcomes if re.fullmatch(r"[\w.]+", p))
        out = []
        for pattern in patterns:
            found = sorted(n for n in names
                           if n.startswith(self.prefix) and re.fullmatch(pattern, n[len(self.prefix):]))
            if len(found) > 1:
                numbered = {int(m.group(1)): n for n in found if (m := re.search(r"(\d+)$", n))}
                found = [numbered[16] if 16 in numbered else numbered[max(numbered)]] if numbered else found[:1]
            out += found
        return out


DOWNSTREAM: dict[str, DownstreamMethod] = {}


def register_downstream(m: DownstreamMethod) -> DownstreamMethod:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", m.name):
        raise ValueError(f"downstream method name {m.name!r}: use lower-case letters, digits and '_'")
    if m.name in DOWNSTREAM and DOWNSTREAM[m.name] is not m:
        raise ValueError(f"downstream method {m.name!r} is registered twice")
    DOWNSTREAM[m.name] = m
    return m


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line: the per-example artifacts of benchmark and downstream stages."""
    import json

    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
