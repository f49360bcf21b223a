"""The gold source of the downstream methods: the prompts they are judged on and the checker that judges them.

    source = gold_source(cfg, world)       # task=toy: the world; task=<name>: that task's items and checker
    prompts = source.prompts(per_domain)   # objects with .key, .text, .domain
    source.gold(prompt, response)          # in [0, 1]

`task=toy` is the world's held-out prompts of every domain (`World.sample_prompts`, as the methods drew them
before this seam) and `World.gold`, so toy metrics are unchanged; a real task (rmexp/tasks/) is its items, all in
one domain named after the task, and the task's checker. Methods never call the World for prompts or gold.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from omegaconf import DictConfig

from rmexp.tasks import TASKS, TaskError, TaskItem, load_items
from rmexp.world.core import WORLD_VERSION, World
from rmexp.world.domains import DOMAINS


class GoldSource(Protocol):
    name: str

    def prompts(self, per_domain: int) -> list: ...          # the first `per_domain` eval prompts of each domain
    def gold(self, prompt, response: str) -> float: ...      # the checker's score of one response
    def identity(self) -> list: ...                         # what a cache key needs to know of the source
    def train_prompts(self) -> dict[str, list] | None: ...  # per domain, for RL; None: the source has none
    def known(self) -> dict[str, Any]: ...                  # every prompt it can judge, by text
    def dataset(self) -> tuple[list[dict], Any]: ...        # (rows, source) for the MLflow dataset record


@dataclass(frozen=True)
class TaskPrompt:
    """One task item as the methods see a prompt (the same fields as the world's `Prompt`)."""
    key: str
    text: str
    domain: str
    item: TaskItem


class ToyGold:
    """The world's held-out prompts and verifiers."""
    name = "toy"

    def __init__(self, world: World):
        self.world = world

    def prompts(self, per_domain: int) -> list:
        return [p for d in DOMAINS for p in self.world.sample_prompts(d, "heldout", per_domain)]

    def gold(self, prompt, response: str) -> float:
        return self.world.gold(prompt, response)

    def identity(self) -> list:
        return [self.world.seed, WORLD_VERSION]

    def train_prompts(self) -> dict[str, list]:
        return {d: self.world.prompts(d, "train") for d in DOMAINS}

    def known(self) -> dict[str, Any]:
        return {p.text: p for d in DOMAINS for s in ("train", "heldout") for p in self.world.prompts(d, s)}

    def dataset(self) -> tuple[list[dict], Any]:
        rows = [{"key": p.key, "prompt": p.text, "domain": p.domain}
                for d in DOMAINS for p in self.world.prompts(d, "heldout")]
        return rows, {"generator": "rmexp.world", "world.seed": self.world.seed, "split": "heldout"}


class TaskGold:
    """A real task's items (one domain, named after the task), its checker, and optionally train items (the
    prompts PPO and RLVR train on; never the eval prompts)."""

    def __init__(self, name: str, items: list[TaskItem], source: str, train_items: list[TaskItem] | None = None):
        self.name, self.items, self.source, self.train_items = name, items, source, train_items
        self._prompts = [TaskPrompt(i.key, i.prompt, name, i) for i in items]
        self._train = None if train_items is None else [TaskPrompt(i.key, i.prompt, name, i) for i in train_items]

    def prompts(self, per_domain: int) -> list:
        return self._prompts[:per_domain]

    def gold(self, prompt: TaskPrompt, response: str) -> float:
        return float(TASKS[self.name].gold(prompt.item, response))

    def identity(self) -> list:
        train = None if self.train_items is None else items_digest(self.train_items)
        return [self.name, items_digest(self.items)] + ([train] if train else [])

    def train_prompts(self) -> dict[str, list] | None:
        return None if self._train is None else {self.name: self._train}

    def known(self) -> dict[str, Any]:
        return {p.text: p for p in (self._train or []) + self._prompts}

    def dataset(self) -> tuple[list[dict], Any]:
        rows = [{"key": i.key, "prompt": i.prompt, "reference": json.dumps(i.reference, sort_keys=True)}
                for i in self.items]
        return rows, self.source


def items_digest(items: list[TaskItem]) -> str:
    """Content hash of task items (keys, prompts and references): two files with the same rows agree."""
    blob = json.dumps([[i.key, i.prompt, i.reference] for i in items], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_loaded: dict[tuple, TaskGold] = {}


def load_task(t: DictConfig) -> TaskGold:
    """The items of task config `t` (memoised per process: preflight and the trial read them once)."""
    from rmexp.data import file_mtime

    mtime, train_mtime = file_mtime(t.path), file_mtime(t.train_path)
    key = (t.name, str(t.path), t.subset, t.split, t.size, t.seed, mtime, t.train_path, t.train_split, train_mtime)
    if key not in _loaded:
        items = load_items(t.name, str(t.path), t.split, t.size, t.seed, subset=t.subset)
        where = str(t.path) + (f" ({t.subset})" if t.subset else "") + (f" [{t.split}]" if not mtime else "")
        train = None
        if t.train_path:
            train = load_items(t.name, str(t.train_path), t.train_split, 0, t.seed, subset=t.subset)
            shared = {i.prompt for i in items} & {i.prompt for i in train}
            if shared:
                raise TaskError(f"task={t.name}: task.train_path={str(t.train_path)!r} shares {len(shared)} prompt(s) "
                                f"with the eval items of task.path={str(t.path)!r} (e.g. {sorted(shared)[0][:60]!r}); "
                                f"RL on eval prompts would measure memorisation: use disjoint splits")
        _loaded[key] = TaskGold(t.name, items, where, train)
    return _loaded[key]


def gold_source(cfg: DictConfig, world: World) -> ToyGold | TaskGold:
    """The gold source `cfg.task` names."""
    return ToyGold(world) if cfg.task.name == "toy" else load_task(cfg.task)
