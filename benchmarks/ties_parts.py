"""Where a sweep's RMs lose RB2 Ties: the official score's parts, per model.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/ties_parts.py --parent 6e56ca71     # the base-model study's sweep

Reads each trial's `rb2_scores.jsonl` (under `runs/<sweep>/<trial_key>/`) of a sweep's parent run in the MLflow store
and scores its Ties rows again with `rmexp.bench.score_rb2` (the official formula; the rescored Ties equals the logged
`rb2/Ties`, checked), so nothing is trained. Per model, means over its trials: the Ties score and its weighted parts
(ref and tied accuracy 0.3 each: every correct answer above every wrong one, for a prompt with one correct answer and
for one with several; correctness preferred and its hard form 0.2 each: that gap wider than the spread among the
correct answers), and the medians over tied prompts of that spread and of the gap (lowest correct minus highest wrong).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median

PARTS = ("ref_accuracy", "tied_accuracy", "correctness_preferred", "correctness_preferred_hard")


def ties_parts(lines: list[dict]) -> dict[str, float]:
    """One trial's Ties score, its parts, and the median spread and gap over its tied prompts."""
    from rmexp.bench import score_rb2

    ties = [r for r in lines if r["subset"] == "Ties"]
    res = score_rb2(ties)
    tied = [r for r in ties if r["id"].startswith("tied:")]
    return {"Ties": res.scores["Ties"], **{k: res.details[f"Ties/{k}"] for k in PARTS},
            "spread": median(max(r["scores_chosen"]) - min(r["scores_chosen"]) for r in tied),
            "gap": median(min(r["scores_chosen"]) - max(r["scores_rejected"]) for r in tied)}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from math_forms import add_sweep_args, sweep_trials

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_args(p)
    a = p.parse_args(argv)
    by_model: dict[str, list[dict]] = defaultdict(list)
    for model, _cfg, lines, logged in sweep_trials(a):
        parts = ties_parts(lines)
        if not math.isclose(parts["Ties"], logged["rb2/Ties"], abs_tol=1e-9):
            raise SystemExit(f"error: {model}: rescored Ties {parts['Ties']:.6f} differs from the logged "
                             f"rb2/Ties {logged['rb2/Ties']:.6f}")
        by_model[model].append(parts)
    if not by_model:
        raise SystemExit("error: no trial of that parent has rb2_scores.jsonl under --runs-dir")
    cols = {"Ties": "Ties", "ref_accuracy": "ref acc", "tied_accuracy": "tied acc", "correctness_preferred": "pref",
            "correctness_preferred_hard": "pref hard", "spread": "spread", "gap": "gap"}
    print(f"{'model':<16} {'trials':>6} " + " ".join(f"{h:>9}" for h in cols.values()))
    for model in sorted(by_model):
        ps = by_model[model]
        print(f"{model:<16} {len(ps):>6} " + " ".join(f"{sum(q[c] for q in ps) / len(ps):9.3f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
