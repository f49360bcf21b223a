"""Where a sweep's RMs lose RB2 Math: accuracy by question and answer form, and pairwise wins by distractor distance.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/math_forms.py --parent 350979ff     # the base-model study's sweep
    PYTHONPATH=$PWD .venv/bin/python benchmarks/math_forms.py --experiment base_draws --parent 86b23221

Reads each trial's `rb2_scores.jsonl` (kept under `runs/<sweep>/<trial_key>/`) of a sweep's parent run in the MLflow
store and rebuilds the toy RB2 Math rows (`rmexp.world.data.rb2_rows`, world seed and rows per subset from the
trial's config), so nothing is trained. Per model (means over its trials):
- RB2 Math accuracy (best of 4) by form: one-step or two-step question; the chosen answer states its steps
  ("3 plus 4 is 7") or only the result ("the answer is 7"), where no checked statement of the corpus applies;
- pairwise wins of the chosen answer over each rejected one, split by how far the wrong final number is from the
  right one: a near miss (off by 1-2: the result of a neighbouring train fact, which the preference data endorses)
  or far.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

NEAR = 2  # a wrong final number within this distance of the right one is a near miss (Math.wrong's own slips)


def question_form(prompt: str) -> str:
    return "two-step" if prompt.count(" plus ") + prompt.count(" minus ") == 2 else "one-step"


def answer_form(text: str) -> str:
    """"stated" when the answer states a step ("3 plus 4 is 7"), "bare" when it gives only a number."""
    return "stated" if re.search(r"\d+ (plus|minus) \d+ is", text) else "bare"


def breakdown(rows: dict[str, dict], score_lines: list[dict]) -> dict:
    """rows: RB2 Math rows by id; score_lines: `rb2_scores.jsonl` lines (other subsets ignored). Returns
    {"accuracy": {form: mean result}, "n": {form: rows}, "pairs": {"near"|"far": share of chosen > rejected}}."""
    from rmexp.world.domains import parse_numbers

    results, wins = defaultdict(list), defaultdict(list)
    for s in score_lines:
        if s["subset"] != "Math":
            continue
        row = rows[s["id"]]
        if len(row["rejected"]) != len(s["scores_rejected"]):
            raise ValueError(f"{s['id']}: {len(s['scores_rejected'])} rejected scores for {len(row['rejected'])} "
                             f"rebuilt answers: the rows were not rebuilt with the trial's benchmark settings")
        form = f"{question_form(row['prompt'])}/{answer_form(row['chosen'][0])}"
        results[form].append(s["result"])
        results["all"].append(s["result"])
        truth = parse_numbers(row["chosen"][0])[-1]
        for text, score in zip(row["rejected"], s["scores_rejected"]):
            distance = abs(parse_numbers(text)[-1] - truth)
            wins["near" if distance <= NEAR else "far"].append(s["scores_chosen"][0] > score)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"accuracy": {k: mean(v) for k, v in results.items()}, "n": {k: len(v) for k, v in results.items()},
            "pairs": {k: mean(v) for k, v in wins.items()}}


def _trials(tracking_uri: str, experiment: str, parent_prefix: str, runs_dir: Path):
    """(model, trial config, rb2_scores lines) of every FINISHED trial under the parent run starting with the prefix
    (at least 8 characters, so that it names one parent), read from the trial's folder under `runs_dir`."""
    import yaml
    from mlflow.tracking import MlflowClient

    if len(parent_prefix) < 8:
        raise SystemExit(f"error: parent run id {parent_prefix!r}: give at least its first 8 characters")
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no MLflow experiment {experiment!r} at {tracking_uri}")
    for r in client.search_runs([exp.experiment_id], "", max_results=10000):
        if r.info.status != "FINISHED" or not r.data.tags.get("mlflow.parentRunId", "").startswith(parent_prefix):
            continue
        folders = sorted(runs_dir.glob(f"*/{r.data.tags['rmexp.trial_key']}"))
        if folders and (folders[0] / "rb2_scores.jsonl").exists():
            cfg = yaml.safe_load((folders[0] / "config.yaml").read_text())
            lines = [json.loads(line) for line in (folders[0] / "rb2_scores.jsonl").read_text().splitlines()]
            yield r.data.params["model"], cfg, lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="base_models", help="the sweep's MLflow experiment")
    p.add_argument("--parent", required=True, help="the sweep's parent run id (its first 8 characters are enough)")
    p.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    a = p.parse_args(argv)
    from rmexp.world.core import World
    from rmexp.world.data import rb2_rows

    by_model: dict[str, list[dict]] = defaultdict(list)
    worlds: dict[tuple, dict] = {}
    for model, cfg, lines in _trials(a.tracking_uri, a.experiment, a.parent, a.runs_dir):
        spec = (cfg["world"]["seed"], cfg["benchmark"]["rows_per_subset"], cfg["benchmark"]["seed"])
        if spec not in worlds:
            worlds[spec] = {r["id"]: r for r in rb2_rows(World(spec[0]), spec[1], spec[2]) if r["subset"] == "Math"}
        by_model[model].append(breakdown(worlds[spec], lines))
    if not by_model:
        raise SystemExit("error: no trial of that parent has rb2_scores.jsonl under --runs-dir")
    forms = sorted({f for bs in by_model.values() for b in bs for f in b["accuracy"] if f != "all"})
    first = next(iter(by_model.values()))[0]["n"]
    print("RB2 Math rows per form: " + ", ".join(f"{f} {first.get(f, 0)}" for f in forms))
    print(f"{'model':<16} {'trials':>6} {'all':>6} " + " ".join(f"{f:>16}" for f in forms)
          + f" {'pairs near':>10} {'pairs far':>9}")
    for model in sorted(by_model):
        bs = by_model[model]
        avg = lambda get: sum(get(b) for b in bs) / len(bs)  # noqa: E731
        print(f"{model:<16} {len(bs):>6} {avg(lambda b: b['accuracy']['all']):6.3f} "
              + " ".join(f"{avg(lambda b: b['accuracy'].get(f, float('nan'))):16.3f}" for f in forms)
              + f" {avg(lambda b: b['pairs']['near']):10.3f} {avg(lambda b: b['pairs']['far']):9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
