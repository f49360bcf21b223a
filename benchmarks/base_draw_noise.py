"""How much a base's own pretraining draw moves an RM, against the trial seed (docs/world_calibration.md).

    python benchmarks/base_draw_noise.py --draws-parent 86b23221 --seeds-parent 350979ff
    python benchmarks/base_draw_noise.py --draws-parent 4d79bd69 --seeds-parent 6e56ca71 --size xl

Reads two sweeps from MLflow: `base_draws` (the m and xl pairs, model.seed 0-3 at trial seed 0) and `base_models`
(seeds 0-3 on the model.seed-0 base), for the pairs of one size (`--size`, default m). Prints, per model and metric, the SD over base draws next to the SD over trial seeds,
and pretrained - random-init per family paired by draw (t interval, 95%). Trains nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FAMILIES = ("llama", "gpt2")
METRICS = ("rb2/overall", "rb2/Factuality", "rb2/Math", "bon/gain_16", "eval/acc")


def finished_child_runs(client, experiment: str, parent_prefix: str) -> list:
    """The FINISHED child runs of the parent run starting with the prefix (at least 8 characters, so that it names
    one parent), in `experiment`."""
    if len(parent_prefix) < 8:
        raise SystemExit(f"parent run id {parent_prefix!r}: give at least its first 8 characters")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r}: run its sweep first")
    return [r for r in client.search_runs([exp.experiment_id], "", max_results=10000)
            if r.info.status == "FINISHED" and r.data.tags.get("mlflow.parentRunId", "").startswith(parent_prefix)]


def finished_children(client, experiment: str, parent_prefix: str, by: str) -> dict[str, dict[int, dict[str, float]]]:
    """{model: {value of param `by`: metrics}} over `finished_child_runs`; two finished runs of one model and value
    are an error."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in finished_child_runs(client, experiment, parent_prefix):
        model, value = r.data.params["model"], int(r.data.params[by])
        if value in out.get(model, {}):
            raise SystemExit(f"{experiment}: two finished trials of {model} at {by}={value} under parent "
                             f"{parent_prefix!r} (replicates are not read here)")
        out.setdefault(model, {})[value] = r.data.metrics
    if not out:
        raise SystemExit(f"no finished trials under parent {parent_prefix!r} in {experiment!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from world_calibration import t_interval  # the benchmarks' one t interval (world_transfer_probe uses it too)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    ap.add_argument("--draws-parent", required=True, help="parent run id (or prefix) of the base_draws sweep")
    ap.add_argument("--seeds-parent", required=True, help="parent run id (or prefix) of the base_models sweep")
    ap.add_argument("--size", default="m", help="the size whose pretrained / random-init pairs to read (m, xl)")
    args = ap.parse_args(argv)
    models = [f"{init}_{fam}_{args.size}" for fam in FAMILIES for init in ("toy", "random")]
    client = MlflowClient(args.tracking_uri)
    draws = finished_children(client, "base_draws", args.draws_parent, "model.seed")
    seeds = finished_children(client, "base_models", args.seeds_parent, "seed")
    for metric in METRICS:
        print(metric)
        sd = {"draws": [], "seeds": []}
        for m in models:
            d = np.array([draws[m][k][metric] for k in sorted(draws[m])])
            s = np.array([seeds[m][k][metric] for k in sorted(seeds[m])])
            sd["draws"].append(d.std(ddof=1))
            sd["seeds"].append(s.std(ddof=1))
            print(f"  {m:15s} draws n={len(d)} mean {d.mean():.3f} SD {d.std(ddof=1):.3f} "
                  f"({' '.join(f'{x:.3f}' for x in d)}) | trial seeds n={len(s)} mean {s.mean():.3f} SD {s.std(ddof=1):.3f}")
        rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in sd.items()}
        print(f"  pooled SD (root mean square over the models): draws {rms['draws']:.3f}, trial seeds {rms['seeds']:.3f}")
        for fam in FAMILIES:
            a, b = draws[f"toy_{fam}_{args.size}"], draws[f"random_{fam}_{args.size}"]
            ks = sorted(set(a) & set(b))
            mean, lo, hi = t_interval([a[k][metric] - b[k][metric] for k in ks])
            print(f"  {fam} pretrained - random-init over {len(ks)} draws: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
