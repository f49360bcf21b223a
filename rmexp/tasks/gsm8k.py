"""GSM8K (`question`, `answer` ending in `#### <number>`): the response's final number vs the gold one.

The response's answer is the first number after its own `####` when it writes one, else its last number
(commas, currency signs and units around it are ignored; 18.0 equals 18).
"""
from __future__ import annotations

from rmexp.tasks import GoldTask, TaskError, TaskItem, register_task
from rmexp.tasks._answers import first_number, last_number, parse_number


def gold_answer(answer: str) -> str:
    if "####" not in answer:
        raise TaskError("answer has no '#### <number>' line")
    final = answer.rsplit("####", 1)[1].strip()
    if parse_number(final) is None:
        raise TaskError(f"the gold answer {final!r} after '####' is not a number")
    return final


def response_answer(response: str):
    if "####" in response:
        return first_number(response.rsplit("####", 1)[1])
    return last_number(response)


def _item(i: int, row: dict) -> TaskItem:
    return TaskItem(key=str(row.get("id", i)), prompt=row["question"], reference={"answer": gold_answer(row["answer"])})


def gold(item: TaskItem, response: str) -> float:
    got = response_answer(response)
    return float(got is not None and got == parse_number(item.reference["answer"]))


register_task(GoldTask("gsm8k", ("question", "answer"), _item, gold))
