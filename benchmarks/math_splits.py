"""Is held-out Math adversarial to association shortcuts under other splits of the world's Math prompts?

    PYTHONPATH=$PWD .venv/bin/python benchmarks/math_splits.py

For each split it re-splits the world's Math prompts (world seed 0; the other domains as they are) and prints the
association baseline of world_transfer_probe.py (a scorer that counts only which answer numbers the train
preference pairs endorse with which question numbers; no arithmetic): pair accuracy on train and held-out prompts
and RB2 accuracy on held-out rows (chance 0.5 and 0.25). Below chance on held-out prompts = the split rewards an RM
for *not* learning the associations the preference data teaches. No model is trained; ~30 s.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_transfer_probe import association_baseline  # noqa: E402

from rmexp.world.core import World  # noqa: E402
from rmexp.world.domains import Math  # noqa: E402


def by_result(p) -> set[int]:
    return {r for *_, r in Math.steps(p)}


def resplit(world: World, held_of) -> World:
    """The world with its Math prompts split by `held_of(prompt) -> bool` (True: held out)."""
    prompts = world.prompts("Math", "train") + world.prompts("Math", "heldout")
    world._split["Math"] = {"heldout": [p for p in prompts if held_of(p)],
                            "train": [p for p in prompts if not held_of(p)]}
    world._train_keys["Math"] = {p.key for p in world._split["Math"]["train"]}
    world._heldout_units["Math"] = set()  # no held-out *fact* to protect in these splits (they are not by fact)
    return world


def main() -> int:
    held_results = set(random.Random("split-results").sample(range(Math.MAX_RESULT + 1), 6))  # 6 of 19, ~30%
    splits = {
        "by fact (the world's)": None,
        "plus train / minus held out": lambda p: any(op == "minus" for _, op, _ in p.get("ops")),
        "minus train / plus held out": lambda p: all(op == "plus" for _, op, _ in p.get("ops")),
        "one-step train / two-step held out": lambda p: len(p.get("ops")) == 2,
        f"by result (held out: {sorted(held_results)})": lambda p: bool(by_result(p) & held_results),
    }
    print("| split | train prompts | held-out prompts | assoc pair train | assoc pair held-out | assoc RB2 held-out |")
    print("|---|---|---|---|---|---|")
    for name, held_of in splits.items():
        world = World(0) if held_of is None else resplit(World(0), held_of)
        out = association_baseline(world, 3000)
        print(f"| {name} | {len(world.prompts('Math', 'train'))} | {len(world.prompts('Math', 'heldout'))} | "
              f"{out['assoc_pair_train/Math']:.3f} | {out['assoc_pair_heldout/Math']:.3f} | {out['assoc_rb2/Math']:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
