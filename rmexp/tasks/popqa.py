"""PopQA-style short answers (`question`, `possible_answers`): correct when any accepted answer occurs
in the response, case-insensitively (PopQA's own evaluation is this substring match)."""
from __future__ import annotations

import json
import re

from rmexp.tasks import GoldTask, TaskError, TaskItem, register_task


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def _item(i: int, row: dict) -> TaskItem:
    answers = row["possible_answers"]
    if isinstance(answers, str):  # the published file stores the list as a JSON string
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError:
            raise TaskError("possible_answers is neither a list nor a JSON list") from None
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise TaskError("possible_answers must be a non-empty list of strings")
    return TaskItem(key=str(row.get("id", i)), prompt=row["question"], reference={"answers": answers})


def gold(item: TaskItem, response: str) -> float:
    text = _norm(response)
    return float(any(_norm(a) in text for a in item.reference["answers"] if a.strip()))


register_task(GoldTask("popqa", ("question", "possible_answers"), _item, gold))
