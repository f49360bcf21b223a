"""Gold tasks: the verifiable signal that best-of-N, PPO, DPO and RLVR are judged by.

A task is one module here that registers a :class:`GoldTask`: how its rows are read (a local
jsonl/parquet file or a hub id, in the task's published schema) and how one response is checked
against one row (1.0 correct, 0.0 wrong; IFEval gives the share of instructions followed).
Modules are discovered by import, so adding a task is one module plus one ``conf/task/<name>.yaml``.

    from rmexp.tasks import TASKS, load_items
    items = load_items("gsm8k", "tests/fixtures/gsm8k.jsonl", split="test", size=50, seed=0)
    TASKS["gsm8k"].gold(items[0], "... so the answer is 18.")
"""
from __future__ import annotations

import importlib
import pkgutil
import random
from dataclasses import dataclass
from typing import Any, Callable


class TaskError(ValueError):
    """Bad task input: names the file/dataset and the row."""


@dataclass(frozen=True)
class TaskItem:
    key: str                   # stable id of the row (its index in the source when it has none)
    prompt: str                # what the policy is asked
    reference: dict[str, Any]  # what the checker needs (gold answer, instruction ids and kwargs, ...)


@dataclass(frozen=True)
class GoldTask:
    name: str
    columns: tuple[str, ...]                          # required columns of the published schema
    to_item: Callable[[int, dict[str, Any]], TaskItem]  # one source row -> item (raises TaskError)
    gold: Callable[[TaskItem, str], float]            # response -> gold score in [0, 1]


TASKS: dict[str, GoldTask] = {}


def register_task(task: GoldTask) -> GoldTask:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    TASKS[task.name] = task
    return task


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def items_from_rows(name: str, rows: list[dict[str, Any]], where: str) -> list[TaskItem]:
    """Rows in the task's schema -> items; one clear error naming the source and the first bad row."""
    task = TASKS[name]
    if not rows:
        raise TaskError(f"task={name}: {where} has no rows")
    items = []
    for i, row in enumerate(rows):
        missing = [c for c in task.columns if c not in row]
        if missing:
            raise TaskError(f"task={name}: {where} row {i}: missing column(s) {missing}; "
                            f"the {name} schema has {list(task.columns)}")
        try:
            items.append(task.to_item(i, row))
        except TaskError as err:
            raise TaskError(f"task={name}: {where} row {i}: {err}") from None
    return items


def read_task_rows(name: str, path: str, split: str, subset: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local .jsonl/.json/.parquet file, or of hub dataset `path` (config `subset`, split `split`),
    read the way preference data is (rmexp.data.read_rows: offline and not cached gives one line naming the
    dataset and how to save it as a file); errors become TaskError naming the task."""
    from rmexp.data import DataSourceError, read_rows

    try:
        return read_rows(path, split, subset)
    except DataSourceError as err:
        raise TaskError(f"task={name}: {err}; here the path is task.path=FILE.parquet") from None


def load_items(name: str, path: str, split: str, size: int, seed: int, subset: str | None = None) -> list[TaskItem]:
    """Read a task's rows (file or hub id), keep a seeded sample of `size` (0 = all, in source order)."""
    if name not in TASKS:
        raise TaskError(f"task={name} is not a registered task; allowed: {sorted(TASKS)}")
    rows = read_task_rows(name, path, split, subset)
    items = items_from_rows(name, rows, repr(path))
    if size and size < len(items):
        items = random.Random(f"task-{name}-{seed}").sample(items, size)
    return items


_discover()
