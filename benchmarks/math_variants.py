"""Candidate Math domains for the toy world (probe variants; the world's own Math is rmexp.world.domains.Math).

`ColumnMath` (`--math columns`). Why: in the world's Math (single-digit facts split by fact) the held-out set is adversarial to any RM that scores
(operand, result) associations: for a fixed operand the results are a bijection with the other operand, so the
true result of a held-out fact is the one association that no train pair endorses, while its near misses are the
train facts' results. A counting scorer that knows nothing but those associations is far below chance there
(`world_transfer_probe.py --association`), and so are the RMs. This candidate asks for a skill instead of a table
entry: two-digit sums and differences without carries or borrows, solved column by column from the single-digit
facts the corpus states; the split is by problem, so held-out problems are new numbers whose column facts the
preference data shows in other problems. Whole-number associations are sparse (one problem each); what carries
over is the column procedure, which pretraining teaches (train dialogues and the digit facts) and a random-init
base can only learn from the preference pairs.

`StatementMath` (`--math statement`): the world's one-step facts only, every answer the bare statement "3 plus 4 is
7 ." (no styles, no two-step questions), i.e. the exact format of the checked corpus's statements: can an RM read
a verdict the base learnt in pretraining when the answer is nothing but the statement it was learnt on?
"""
from __future__ import annotations

import random

from rmexp.world.domains import Math, Prompt, _styled, number_text, parse_numbers


class ColumnMath(Math):
    """Two-digit `a plus b` without carries and `a minus b` without borrows; answers show the columns."""
    MAX_RESULT = 99

    def prompts(self) -> list[Prompt]:
        out = []
        for a in range(10, 100):
            for b in range(10, 100):
                cols = list(zip(divmod(a, 10), divmod(b, 10)))  # (tens, tens), (units, units)
                if all(x + y <= 9 for x, y in cols):
                    out.append(Prompt(self.name, f"math|{a}+{b}", f"what is {number_text(a)} plus {number_text(b)} ?",
                                      (("ops", ((a, "plus", b),)),)))
                if all(x >= y for x, y in cols):
                    out.append(Prompt(self.name, f"math|{a}-{b}", f"what is {number_text(a)} minus {number_text(b)} ?",
                                      (("ops", ((a, "minus", b),)),)))
        return out

    def units(self, p: Prompt) -> tuple[str, ...]:
        return (p.key,)  # split by problem: a held-out problem is new numbers, its column facts are not hidden

    def stated_units(self, text: str) -> set[str]:
        return set()

    @staticmethod
    def columns(p: Prompt) -> list[tuple[int, str, int, int]]:
        """(digit of a, op, digit of b, result digit), units column first."""
        (a, op, b), = p.get("ops")
        out = []
        for x, y in ((a % 10, b % 10), (a // 10, b // 10)):
            out.append((x, op, y, Math.OPS[op](x, y)))
        return out

    def _render_cols(self, rng, p: Prompt, cols) -> str:
        final = number_text(cols[1][3] * 10 + cols[0][3])
        if rng.random() < 0.4:
            (a, op, b), = p.get("ops")
            return _styled(rng, f"{number_text(a)} {op} {number_text(b)} is {final}", final, ("the answer is", "so ,"))
        shown = " . ".join(f"{x} {op} {y} is {r}" for x, op, y, r in cols)
        return f"{shown} . so the answer is {final} ."

    def correct(self, rng, p: Prompt) -> str:
        return self._render_cols(rng, p, self.columns(p))

    def wrong(self, rng, p: Prompt) -> str:
        cols = [list(c) for c in self.columns(p)]
        k = rng.randrange(2)
        r = cols[k][3]
        if rng.random() < 0.5:  # a slip in one column: off by one or two
            cols[k][3] = rng.choice([d for d in (r - 2, r - 1, r + 1, r + 2) if 0 <= d <= 9])
        else:  # any other digit in that column
            cols[k][3] = rng.choice([d for d in range(10) if d != r])
        return self._render_cols(rng, p, [tuple(c) for c in cols])

    def gold(self, p: Prompt, response: str) -> float:
        numbers = parse_numbers(response)
        (a, op, b), = p.get("ops")
        return 1.0 if numbers and numbers[-1] == Math.OPS[op](a, b) else 0.0


class StatementMath(Math):
    """One-step facts, split by fact as in the world; every answer is the statement "a op b is c ."."""

    def prompts(self) -> list[Prompt]:
        return [p for p in super().prompts() if len(p.get("ops")) == 1]

    def _render(self, rng, steps) -> str:
        (left, op, right, result), = steps
        return f"{left} {op} {right} is {number_text(result)} ."


VARIANTS = {"columns": ColumnMath, "statement": StatementMath}


def install(name: str) -> None:
    """Make World build the variant as its Math domain (call before World(...))."""
    import rmexp.world.core as core
    core.Math = VARIANTS[name]


if __name__ == "__main__":  # a look at the candidate
    import sys
    install(sys.argv[1] if len(sys.argv) > 1 else "columns")
    from rmexp.world.core import World
    w = World(0)
    rng = random.Random(0)
    for split in ("train", "heldout"):
        ps = w.prompts("Math", split)
        print(split, len(ps))
    for p in w.sample_prompts("Math", "heldout", 3):
        print(p.text, "|", w.correct(rng, p), "|", w.wrong(rng, p))
