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
  or far;
- then the same with 95% intervals by resampling the rows, and accuracy by how many of a row's 3 wrong answers are
  near misses.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
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
    {"accuracy": {form: mean result}, "n": {form: rows}, "pairs": {"near"|"far": share of chosen > rejected},
    "per_row": {id: {"result", "near": [wins], "far": [wins]}}}. Each line's result is recomputed from its scores
    (best of 4, ties shared, as rmexp.bench scores it) and must equal the one logged."""
    from rmexp.bench import _best_of_n_result
    from rmexp.world.domains import parse_numbers

    results, wins, per_row = defaultdict(list), defaultdict(list), {}
    for s in score_lines:
        if s["subset"] != "Math":
            continue
        row = rows[s["id"]]
        if len(row["rejected"]) != len(s["scores_rejected"]):
            raise ValueError(f"{s['id']}: {len(s['scores_rejected'])} rejected scores for {len(row['rejected'])} "
                             f"rebuilt answers: the rows were not rebuilt with the trial's benchmark settings")
        result = _best_of_n_result([*s["scores_chosen"], *s["scores_rejected"]])
        if result != s["result"]:
            raise ValueError(f"{s['id']}: the scores give result {result}, the file says {s['result']}")
        form = f"{question_form(row['prompt'])}/{answer_form(row['chosen'][0])}"
        results[form].append(result)
        results["all"].append(result)
        truth = parse_numbers(row["chosen"][0])[-1]
        mine = per_row[s["id"]] = {"result": result, "near": [], "far": []}
        for text, score in zip(row["rejected"], s["scores_rejected"]):
            kind = "near" if abs(parse_numbers(text)[-1] - truth) <= NEAR else "far"
            mine[kind].append(s["scores_chosen"][0] > score)
            wins[kind].append(s["scores_chosen"][0] > score)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"accuracy": {k: mean(v) for k, v in results.items()}, "n": {k: len(v) for k, v in results.items()},
            "pairs": {k: mean(v) for k, v in wins.items()}, "per_row": per_row}


def row_bootstrap(bs: list[dict], n_boot: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Mean and 95% percentile interval, resampling the rows (each row's values averaged over the trials first),
    of: RB2 Math accuracy, the near-miss and far pairwise wins, and accuracy by near misses among the rejected."""
    import numpy as np

    ids = sorted(bs[0]["per_row"])
    res = np.array([[b["per_row"][i]["result"] for b in bs] for i in ids]).mean(1)
    near = [np.mean([w for b in bs for w in b["per_row"][i]["near"]]) if bs[0]["per_row"][i]["near"] else np.nan
            for i in ids]
    far = [np.mean([w for b in bs for w in b["per_row"][i]["far"]]) if bs[0]["per_row"][i]["far"] else np.nan
           for i in ids]
    k = np.array([len(bs[0]["per_row"][i]["near"]) for i in ids])
    stats = {"all": res, "pairs near": np.array(near), "pairs far": np.array(far),
             **{f"rows with {j} near": np.where(k == j, res, np.nan) for j in range(4)}}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    out = {}
    for name, v in stats.items():
        if np.isnan(v).all():
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():  # a resample may hold none of a small group
            warnings.simplefilter("ignore", RuntimeWarning)
            boot = np.nanmean(v[draws], axis=1)  # near / far pairs: weighted by row, rows without any left out
        out[name] = (float(np.nanmean(v)), float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5)),
                     int((~np.isnan(v)).sum()))
    return out


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The options that name a sweep's logged trials (`sweep_trials`): experiment, parent run, store, runs folder."""
    p.add_argument("--experiment", default="base_models", help="the sweep's MLflow experiment")
    p.add_argument("--parent", required=True, help="the sweep's parent run id (its first 8 characters are enough)")
    p.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))


def sweep_trials(a: argparse.Namespace):
    """(model, trial config, rb2_scores lines, logged metrics) of every FINISHED trial under the parent run starting
    with the prefix (base_draw_noise.finished_child_runs), read from the trial's folder under `runs_dir`."""
    import yaml
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from base_draw_noise import finished_child_runs

    for r in finished_child_runs(MlflowClient(a.tracking_uri), a.experiment, a.parent):
        folders = sorted(a.runs_dir.glob(f"*/{r.data.tags['rmexp.trial_key']}"))
        if folders and (folders[0] / "rb2_scores.jsonl").exists():
            cfg = yaml.safe_load((folders[0] / "config.yaml").read_text())
            lines = [json.loads(line) for line in (folders[0] / "rb2_scores.jsonl").read_text().splitlines()]
            yield r.data.params["model"], cfg, lines, r.data.metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_args(p)
    a = p.parse_args(argv)
    from rmexp.world.core import World
    from rmexp.world.data import rb2_rows

    by_model: dict[str, list[dict]] = defaultdict(list)
    worlds: dict[tuple, dict] = {}
    for model, cfg, lines, _logged in sweep_trials(a):
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
    print("\nMean over the model's trials, 95% bootstrap interval over the rows (2000 resamples), n rows:")
    for model in sorted(by_model):
        boot = row_bootstrap(by_model[model])
        print(f"{model:<16} " + " | ".join(f"{name} {m:.3f} [{lo:.3f}, {hi:.3f}] n={n}"
                                            for name, (m, lo, hi, n) in boot.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
