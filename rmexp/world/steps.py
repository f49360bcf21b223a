"""Step-by-step Math solutions with a verifiable label per step (the training data of a process RM).

A solution shows every step as "<left> <op> <right> is <result> ." and may end with "so the answer is <n> .".
A wrong solution goes wrong at one step: that step's result is off by one or two, and every later step
carries the wrong running value, so the error step and every step after it are labelled wrong (0), the
steps before it right (1). A concluding sentence takes the label of the value it repeats.

These are new generators beside the domain's own (whose outputs they do not change).
"""
from __future__ import annotations

import random
import re

from rmexp.world.core import World
from rmexp.world.domains import Math, Prompt, number_text

_NUM = r"\d(?: \d)*"
STEP = re.compile(rf"^{_NUM} (?:plus|minus) {_NUM} is {_NUM} \.$")
CONCLUSION = re.compile(rf"^so the answer is {_NUM} \.$")


def step_solution(p: Prompt, rng: random.Random, error_step: int | None,
                  conclude: bool) -> tuple[list[str], list[int]]:
    """The steps of a solution to a Math prompt and their labels; error_step=None gives a correct one."""
    steps = [list(s) for s in Math.steps(p)]
    if error_step is not None:
        delta = rng.choice((-2, -1, 1, 2))
        if steps[error_step][3] + delta < 0:
            delta = -delta
        steps[error_step][3] += delta
        for j in range(error_step + 1, len(steps)):  # later steps compute correctly from the wrong value
            steps[j][0] = steps[j - 1][3]
            steps[j][3] = steps[j][0] + steps[j][2] if steps[j][1] == "plus" else steps[j][0] - steps[j][2]
    texts = [f"{number_text(l)} {op} {number_text(r)} is {number_text(res)} ." for l, op, r, res in steps]
    labels = [int(error_step is None or j < error_step) for j in range(len(steps))]
    if conclude:
        texts.append(f"so the answer is {number_text(steps[-1][3])} .")
        labels.append(labels[-1])
    return texts, labels


def step_solutions(world: World, n: int, wrong_rate: float, seed: int, split: str = "train") -> list[dict]:
    """n labelled solutions to the split's Math prompts: {prompt, prompt_key, response, steps, labels}."""
    rng = random.Random(f"steps-{world.seed}-{seed}-{split}")
    prompts = world.prompts("Math", split)
    rows = []
    for _ in range(n):
        p = rng.choice(prompts)
        n_steps = len(p.get("ops"))
        error_step = rng.randrange(n_steps) if rng.random() < wrong_rate else None
        steps, labels = step_solution(p, rng, error_step, conclude=rng.random() < 0.5)
        rows.append({"prompt": p.text, "prompt_key": p.key, "response": " ".join(steps), "steps": steps,
                     "labels": labels})
    return rows


def split_steps(response: str) -> list[str]:
    """The steps of a step-by-step solution, or the whole response as one step when it is not one
    (answers of other domains, or a Math answer that does not show its work)."""
    sentences, current = [], []
    for word in response.split():
        current.append(word)
        if word == ".":
            sentences.append(" ".join(current))
            current = []
    if current or not sentences:
        return [response]
    if all(STEP.match(s) or CONCLUSION.match(s) for s in sentences) and any(STEP.match(s) for s in sentences):
        return sentences
    return [response]


def step_ends(response: str, steps: list[str]) -> tuple[int, ...]:
    """Character offset just past each step inside the response."""
    ends, pos = [], 0
    for step in steps:
        pos = response.index(step, pos) + len(step)
        ends.append(pos)
    return tuple(ends)
