"""Command line of the toy world: export its datasets, report its benchmarks.

    python -m rmexp.world export --what rb2 --out toy_rb2.parquet [--seed N] [--world-seed N] [--rows-per-subset N]
    python -m rmexp.world export --what rb1 --out toy_rb1.jsonl [--rows-per-subset N]   # RB1: pairs per subset, at most
    python -m rmexp.world export --what preferences --out prefs.parquet [--size N] [--label-noise X] [--mix JSON]
    python -m rmexp.world export --what corpus --out corpus.jsonl [--size N] [--mix JSON]
    python -m rmexp.world report [--world-seed N] [--seed N] [--rows-per-subset N] [--json PATH]

The file format follows the suffix of --out: `.parquet` (pyarrow; list columns and the RB2
`additional_metadata` struct survive a round trip through `datasets.load_dataset("parquet", ...)`)
or `.jsonl` (one JSON object a line). Rows are exactly what `rmexp.world.data` returns, so an
exported toy benchmark is scored by the same code as the real one:

* rb2: the RewardBench 2 schema `id, prompt, chosen [..], rejected [..], num_correct, num_incorrect,
  total_completions, models [..], subset, additional_metadata {prompt_key}`;
* rb1: the RewardBench 1 schema `prompt, chosen, chosen_model, rejected, rejected_model, subset, id`;
* preferences: `prompt, chosen, rejected` plus `id, domain, prompt_key, flipped, gold_chosen, gold_rejected`;
* corpus: one `text` per pretraining document, domains drawn by --mix (default: even).

--mix is a JSON object of domain weights, e.g. '{"Math": 2, "Factuality": 1}'; domains left out get
weight 0. It sets the corpus mix (corpus) or the data mix (preferences).

`report` prints the benchmark sizes, the train / held-out prompt split per domain, the decontamination
check and the "pick the longer" (and "pick the shorter") baselines: every completion scored by its
length in words, then scored with the official RewardBench arithmetic (`rmexp.bench`). Chance on an
RB2 non-Ties subset is 0.25 (1 chosen among 4 completions), on an RB1 pair 0.5; a length baseline
near chance shows that length is no shortcut in the toy world.

Bad input (suffix, option, value) exits with status 2 and one line on stderr before any work starts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rmexp.bench import RB2_SUBSETS, SUBSET_MAPPING, score_rb1, score_rb2
from rmexp.world.core import World
from rmexp.world.data import (
    decontamination, preferences, rb1_length_scores, rb1_rows, rb2_length_scores, rb2_rows, word_count,
)
from rmexp.world.domains import DOMAINS

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl"}
WHATS = ("rb2", "rb1", "preferences", "corpus")

RB2_COLUMNS = ("id", "prompt", "chosen", "rejected", "num_correct", "num_incorrect", "total_completions",
               "models", "subset", "additional_metadata")
RB1_COLUMNS = ("prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "id", "domain", "prompt_key", "flipped",
                      "gold_chosen", "gold_rejected")
CORPUS_COLUMNS = ("text",)

# Defaults match conf/benchmark/toy.yaml and conf/data/toy.yaml.
DEFAULT_RB2_ROWS = 150
DEFAULT_RB1_PAIRS = 40          # rb1_rows' max_per_subset
DEFAULT_PREFERENCES = 8000
DEFAULT_CORPUS_DOCS = 10000
DECONTAM_NGRAM = 8

# Which export options apply to which --what (anything else is refused, not silently ignored).
APPLIES = {
    "rows_per_subset": ("rb2", "rb1"),
    "size": ("preferences", "corpus"),
    "label_noise": ("preferences",),
    "mix": ("preferences", "corpus"),
}
FLAG = {"rows_per_subset": "--rows-per-subset", "size": "--size", "label_noise": "--label-noise", "mix": "--mix"}


class UsageError(ValueError):
    """Bad command-line input; main() prints it as one line and exits 2."""


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def output_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out {path!r}: unknown suffix {suffix or '(none)'!r}; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def even_mix() -> dict[str, float]:
    return {d: 1.0 for d in DOMAINS}


def parse_mix(text: str) -> dict[str, float]:
    """A JSON object of domain weights; left-out domains get 0; at least one weight must be positive."""
    try:
        mix = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--mix {text!r}: not JSON ({err.msg}); e.g. '{{\"Math\": 2, \"Factuality\": 1}}'") from None
    if not isinstance(mix, dict):
        raise UsageError(f"--mix {text!r}: expected a JSON object of domain weights, got {type(mix).__name__}")
    out = {d: 0.0 for d in DOMAINS}
    for key, value in mix.items():
        if key not in DOMAINS:
            raise UsageError(f"--mix: unknown domain {key!r}; the domains are {list(DOMAINS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UsageError(f"--mix: weight of {key!r} must be a finite number >= 0, got {value!r}")
        out[key] = float(value)
    if not any(v > 0 for v in out.values()):
        raise UsageError(f"--mix {text!r}: at least one domain needs a positive weight")
    return out


def _check_export_args(args: argparse.Namespace) -> None:
    output_format(args.out)
    for name, whats in APPLIES.items():
        if getattr(args, name) is not None and args.what not in whats:
            raise UsageError(f"{FLAG[name]} does not apply to --what {args.what} (only to {', '.join(whats)})")
    if args.rows_per_subset is not None and args.rows_per_subset < 1:
        raise UsageError(f"--rows-per-subset must be >= 1, got {args.rows_per_subset}")
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be >= 1, got {args.size}")
    if args.label_noise is not None and not 0.0 <= args.label_noise <= 1.0:
        raise UsageError(f"--label-noise must be in [0, 1], got {args.label_noise}")
    if args.mix is not None:
        args.mix = parse_mix(args.mix)


# ----------------------------------------------------------------------------------------------
# Rows and files
# ----------------------------------------------------------------------------------------------
def export_rows(what: str, world: World, seed: int = 0, rows_per_subset: int | None = None,
                size: int | None = None, label_noise: float | None = None,
                mix: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The rows `export --what` writes (None: the default of that option)."""
    if what == "rb2":
        return rb2_rows(world, rows_per_subset or DEFAULT_RB2_ROWS, seed)
    if what == "rb1":
        return rb1_rows(world, seed, max_per_subset=rows_per_subset or DEFAULT_RB1_PAIRS)
    if what == "preferences":
        return preferences(world, size or DEFAULT_PREFERENCES, mix or even_mix(), label_noise or 0.0, seed)
    if what == "corpus":
        return [{"text": doc} for doc in world.pretraining_docs(mix or even_mix(), size or DEFAULT_CORPUS_DOCS, seed)]
    raise ValueError(f"unknown --what {what!r}; use one of {list(WHATS)}")


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write rows as parquet or jsonl (by suffix), atomically: a reader never sees half a file."""
    path = Path(path)
    fmt = output_format(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # Lists become list<string>, the RB2 metadata dict a struct: both read back as Python
            # lists / dicts by pyarrow, pandas and `datasets`.
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _section(subset: str) -> str:
    return next(s for s, subs in SUBSET_MAPPING.items() if subset in subs)


def report(world: World, rows_per_subset: int = DEFAULT_RB2_ROWS, seed: int = 0) -> dict[str, Any]:
    """Sizes, split, decontamination and length baselines of the toy benchmarks, as a JSON-able dict."""
    rb2 = rb2_rows(world, rows_per_subset, seed)
    rb1 = rb1_rows(world, seed)
    rb2_subsets = [s for s in RB2_SUBSETS if any(r["subset"] == s for r in rb2)]
    rb1_subsets = list(dict.fromkeys(r["subset"] for r in rb1))

    def distinct(rows, subset=None):
        return len({r["prompt"] for r in rows if subset is None or r["subset"] == subset})

    longer2, shorter2 = score_rb2(rb2_length_scores(rb2, 1)), score_rb2(rb2_length_scores(rb2, -1))
    longer1, shorter1 = score_rb1(rb1_length_scores(rb1, 1)), score_rb1(rb1_length_scores(rb1, -1))
    train = [p.text for d in DOMAINS for p in world.prompts(d, "train")]
    decon = decontamination(train, [r["prompt"] for r in rb2 + rb1], DECONTAM_NGRAM)
    rb2_rows_per = Counter(r["subset"] for r in rb2)
    rb1_pairs_per = Counter(r["subset"] for r in rb1)
    return {
        "world_seed": world.seed,
        "benchmark_seed": seed,
        "rows_per_subset": rows_per_subset,
        "splits": {d: {"train": len(world.prompts(d, "train")), "heldout": len(world.prompts(d, "heldout"))}
                   for d in DOMAINS},
        "rb2": {
            "rows": len(rb2), "distinct_prompts": distinct(rb2),
            "subsets": {s: {"rows": rb2_rows_per[s], "distinct_prompts": distinct(rb2, s),
                            "longer": longer2.scores[s], "shorter": shorter2.scores[s],
                            "chance": None if s == "Ties" else 0.25} for s in rb2_subsets},
            "longer_overall": longer2.scores["overall"], "shorter_overall": shorter2.scores["overall"],
        },
        "rb1": {
            "pairs": len(rb1), "distinct_prompts": distinct(rb1),
            "subsets": {s: {"section": _section(s), "pairs": rb1_pairs_per[s], "distinct_prompts": distinct(rb1, s),
                            "longer": longer1.subset_scores[s], "shorter": shorter1.subset_scores[s],
                            "chance": 0.5} for s in rb1_subsets},
            "sections_longer": {k: v for k, v in longer1.scores.items() if k != "overall"},
            "sections_shorter": {k: v for k, v in shorter1.scores.items() if k != "overall"},
            "longer_overall": longer1.scores["overall"], "shorter_overall": shorter1.scores["overall"],
        },
        "decontamination": {"train_prompts": len(set(train)), "benchmark_prompts": decon.n_benchmark,
                            "exact": decon.exact, "ngram": decon.ngram, "ngram_size": decon.ngram_size},
    }


def format_report(rep: dict[str, Any]) -> str:
    def f(x):
        return "    -" if x is None else f"{x:5.3f}"

    lines = [f"toy world: world seed {rep['world_seed']}, benchmark seed {rep['benchmark_seed']}, "
             f"{rep['rows_per_subset']} RB2 rows per subset",
             "",
             f"{'prompts per domain':<24}{'train':>7}{'held-out':>10}"]
    for d, n in rep["splits"].items():
        lines.append(f"  {d:<22}{n['train']:>7}{n['heldout']:>10}")
    tot_t = sum(n["train"] for n in rep["splits"].values())
    tot_h = sum(n["heldout"] for n in rep["splits"].values())
    lines.append(f"  {'total':<22}{tot_t:>7}{tot_h:>10}")

    rb2 = rep["rb2"]
    lines += ["", f"RewardBench 2: {rb2['rows']} rows, {rb2['distinct_prompts']} distinct prompts "
                  "(length baselines: score = +-words, official RB2 arithmetic)",
              f"  {'subset':<24}{'rows':>5}{'prompts':>9}{'longer':>8}{'shorter':>9}{'chance':>8}"]
    for s, v in rb2["subsets"].items():
        lines.append(f"  {s:<24}{v['rows']:>5}{v['distinct_prompts']:>9}   {f(v['longer'])}    "
                     f"{f(v['shorter'])}   {f(v['chance'])}")
    lines.append(f"  {'overall':<24}{'':>5}{'':>9}   {f(rb2['longer_overall'])}    {f(rb2['shorter_overall'])}")

    rb1 = rep["rb1"]
    lines += ["", f"RewardBench 1: {rb1['pairs']} pairs, {rb1['distinct_prompts']} distinct prompts",
              f"  {'subset':<24}{'section':<11}{'pairs':>5}{'prompts':>9}{'longer':>8}{'shorter':>9}{'chance':>8}"]
    for s, v in rb1["subsets"].items():
        lines.append(f"  {s:<24}{v['section']:<11}{v['pairs']:>5}{v['distinct_prompts']:>9}   {f(v['longer'])}    "
                     f"{f(v['shorter'])}   {f(v['chance'])}")
    for sec in rb1["sections_longer"]:
        lines.append(f"  {'section ' + sec:<35}{'':>5}{'':>9}   {f(rb1['sections_longer'][sec])}    "
                     f"{f(rb1['sections_shorter'][sec])}")
    lines.append(f"  {'overall':<35}{'':>5}{'':>9}   {f(rb1['longer_overall'])}    {f(rb1['shorter_overall'])}")

    dc = rep["decontamination"]
    lines += ["", f"decontamination ({dc['train_prompts']} train prompts vs {dc['benchmark_prompts']} benchmark "
                  f"prompts): {dc['exact']} exact, {dc['ngram']} {dc['ngram_size']}-gram overlaps"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rmexp.world", description="The rmexp toy world")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("export", help="write benchmark, preference or corpus rows to .parquet / .jsonl")
    ex.add_argument("--what", choices=WHATS, required=True)
    ex.add_argument("--out", required=True, help="output file; .parquet or .jsonl")
    ex.add_argument("--seed", type=int, default=0, help="seed of the sample drawn (default 0)")
    ex.add_argument("--world-seed", type=int, default=0, help="seed of the world: knowledge base, split (default 0)")
    ex.add_argument("--rows-per-subset", type=int, default=None,
                    help=f"rb2: rows per subset (default {DEFAULT_RB2_ROWS}); "
                         f"rb1: at most this many pairs per subset (default {DEFAULT_RB1_PAIRS})")
    ex.add_argument("--size", type=int, default=None,
                    help=f"preferences: pairs (default {DEFAULT_PREFERENCES}); "
                         f"corpus: documents (default {DEFAULT_CORPUS_DOCS})")
    ex.add_argument("--label-noise", type=float, default=None,
                    help="preferences: share of pairs with chosen and rejected swapped (default 0)")
    ex.add_argument("--mix", default=None, help="preferences, corpus: JSON domain weights (default: even)")

    rp = sub.add_parser("report", help="benchmark sizes, split, decontamination and length baselines")
    rp.add_argument("--world-seed", type=int, default=0)
    rp.add_argument("--seed", type=int, default=0, help="benchmark seed (default 0)")
    rp.add_argument("--rows-per-subset", type=int, default=DEFAULT_RB2_ROWS)
    rp.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "export":
            _check_export_args(args)
            rows = export_rows(args.what, World(args.world_seed), seed=args.seed,
                               rows_per_subset=args.rows_per_subset, size=args.size,
                               label_noise=args.label_noise, mix=args.mix)
            write_rows(rows, args.out)
            print(f"wrote {len(rows)} {args.what} rows ({output_format(args.out)}) to {args.out}")
            return 0
        if args.rows_per_subset < 1:
            raise UsageError(f"--rows-per-subset must be >= 1, got {args.rows_per_subset}")
        rep = report(World(args.world_seed), args.rows_per_subset, args.seed)
        print(format_report(rep))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
            print(f"wrote the report to {args.json}")
        return 0
    except (UsageError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
