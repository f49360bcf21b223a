"""MATH (`problem`, and `answer` or a `solution` with a `\\boxed{}` answer), checked by math-verify.

Equivalence, not string match: `\\frac{1}{2}`, `0.5` and `\\dfrac12` are one answer. The gold is the
row's `answer` when present, else the last `\\boxed{...}` of its `solution`.
"""
from __future__ import annotations

from rmexp.tasks import GoldTask, TaskError, TaskItem, register_task


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def _item(i: int, row: dict) -> TaskItem:
    answer = row.get("answer")
    if not answer:
        if "solution" not in row:
            raise TaskError("needs an 'answer' or a 'solution' column")
        answer = last_boxed(row["solution"])
        if answer is None:
            raise TaskError("solution has no \\boxed{} answer")
    return TaskItem(key=str(row.get("unique_id", row.get("id", i))), prompt=row["problem"],
                    reference={"answer": str(answer)})


def gold(item: TaskItem, response: str) -> float:
    from math_verify import parse, verify  # imported on use: sympy is slow to import

    target = parse(f"${item.reference['answer']}$")
    boxed = last_boxed(response)
    got = parse(f"${boxed}$") if boxed is not None else parse(response)
    return float(bool(target) and bool(got) and verify(target, got))


register_task(GoldTask("math", ("problem",), _item, gold))
