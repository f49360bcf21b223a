"""RM scoring throughput: rmexp's packed scoring vs padded fixed-size batches, same model and same texts.

    python benchmarks/scoring.py --preset cpu-tiny          # here, 2 CPU cores
    python benchmarks/scoring.py --preset gpu               # one CUDA GPU (Qwen2-0.5B shape, bf16)

Workload: the Qwen2-shaped RM of benchmarks/rm_throughput.py (random init), `n_texts` token sequences with
lengths uniform in [min_len, max_len], scored once each (no gradients). Rows:
- padded / fixed: batches of `batch` sequences in the given order, right-padded to the longest of the batch,
  reward at the last real token (`rmexp.rm.last_token_rewards`): what a plain scoring loop does.
- rmexp / sorted: `rmexp.rm.sorted_scores` (what RewardModel.score_texts ran on CPU before `grouped`): sorted by
  length, right-padded batches of at most `budget` tokens.
- rmexp / grouped: `rmexp.rm.scoring.grouped_scores`, RewardModel.score_texts without varlen attention (CPU):
  distinct sequences in groups of one length (no padding, no mask) of at most `budget` tokens, the last layer
  on the last token only.
- rmexp / packed: `rmexp.packing.packed_scores`, RewardModel.score_texts with varlen attention (CUDA, bf16):
  longest first, first fit into fixed budgets of `budget` tokens, no padding, attention kept inside each
  sequence (on CPU it runs with a block-diagonal mask).
- rmexp / packed@B (`--packed-budgets B,...`): the same at other budgets; rmexp / packed+compile (`--compile`): a
  copy whose base model is compiled once, fixed `cu_seqlens` length so that every batch is one graph.
Metric: sequences per second (and real tokens per second); best of `--repeats` (shared cores). The rows'
scores are checked to agree (max abs difference printed). The last line holds the ratios of both rmexp rows to
padded fixed, and names the one RewardModel.score_texts uses on this device.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PRESETS = {
    "cpu-tiny": dict(n_texts=2048, batch=32, budget=4096, precision="fp32"),
    # 1024 texts of 128..1024 tokens: ~0.6M tokens a pass, 4 rows x (1 warm-up + 3 repeats); 4096 did not finish
    # in 90 s on an H200 (16 passes over 2.4M tokens, unpacked rows included)
    "gpu": dict(n_texts=1024, batch=32, budget=65536, precision="bf16"),
}


def _throughput_module():
    spec = importlib.util.spec_from_file_location("rm_throughput_for_scoring", HERE / "rm_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_texts(n: int, min_len: int, max_len: int, vocab: int, first: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(first, vocab, size=int(rng.integers(min_len, max_len + 1))).tolist() for _ in range(n)]


@torch.no_grad()
def score_padded(model, seqs, batch: int, pad_id: int, autocast) -> torch.Tensor:
    from rmexp.rm import last_token_rewards, pad_batch

    out = []
    for i in range(0, len(seqs), batch):
        ids, lengths = pad_batch(seqs[i:i + batch], pad_id)
        with autocast:
            out.append(last_token_rewards(model, ids, lengths).cpu())
    return torch.cat(out)


def score_grouped(model, seqs, budget: int, autocast) -> torch.Tensor:
    from rmexp.rm.scoring import grouped_scores

    with autocast:
        return grouped_scores(model, seqs, budget)


def score_sorted(model, seqs, budget: int, pad_id: int, autocast) -> torch.Tensor:
    from rmexp.rm import sorted_scores

    with autocast:
        return sorted_scores(model, seqs, pad_id, budget)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS))
    p.add_argument("--n-texts", type=int, dest="n_texts")
    p.add_argument("--batch", type=int, help="sequences per padded batch")
    p.add_argument("--budget", type=int, help="tokens per packed batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    for name in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab", "min-len", "max-len"):
        p.add_argument(f"--{name}", type=int, dest=name.replace("-", "_"))
    p.add_argument("--device", help="auto | cpu | cuda (preset default)")
    p.add_argument("--packed-budgets", type=lambda v: [int(x) for x in v.split(",")], default=[],
                   help="comma-separated extra token budgets for the packed row")
    p.add_argument("--compile", action="store_true", help="add a packed+compile row (static shapes)")
    p.add_argument("--skip", type=lambda v: v.split(","), default=[],
                   help="comma-separated rmexp rows to leave out, e.g. grouped (the CPU path) on a GPU")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tp = _throughput_module()
    preset = {**PRESETS[a.preset], **{k: v for k, v in vars(a).items() if k in PRESETS[a.preset] and v is not None}}
    shape = {k: getattr(a, k) for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "min_len",
                                        "max_len", "device")}
    cfg = tp.make_config(a.preset, precision=preset["precision"], **shape)
    device = tp.resolve_device(cfg)
    from rmexp import packing

    t_start = time.perf_counter()
    model = tp.build_model(cfg, cfg.seed).to(device).eval()
    packing.enable_packed_attention(model)  # unpacked calls fall back to transformers' SDPA path
    seqs = make_texts(preset["n_texts"], cfg.min_len, cfg.max_len, cfg.vocab, tp.FIRST_TOKEN_ID, cfg.seed)
    tokens = sum(map(len, seqs))
    autocast = lambda: tp._autocast(device, cfg.precision)  # noqa: E731
    rows = {
        ("padded", "fixed"): lambda: score_padded(model, seqs, preset["batch"], tp.PAD_ID, autocast()),
        ("rmexp", "sorted"): lambda: score_sorted(model, seqs, preset["budget"], tp.PAD_ID, autocast()),
        ("rmexp", "grouped"): lambda: score_grouped(model, seqs, preset["budget"], autocast()),
        ("rmexp", "packed"): lambda: packing.packed_scores(model, seqs, tp.PAD_ID, preset["budget"], autocast()),
    }
    for b in a.packed_budgets:  # the same packing at other budgets (score_texts: >= packing.VARLEN_SCORE_TOKENS)
        rows[("rmexp", f"packed@{b}")] = lambda b=b: packing.packed_scores(model, seqs, tp.PAD_ID, b, autocast())
    if a.compile:  # a copy whose base model is compiled once: fixed budgets and cu_seqlens give one graph
        compiled = copy.deepcopy(model)
        compiled.base_model.compile(dynamic=False)
        rows[("rmexp", "packed+compile")] = lambda: packing.packed_scores(
            compiled, seqs, tp.PAD_ID, preset["budget"], autocast(), fixed_segments=True)
    with autocast():  # what RewardModel.score_texts runs here
        used = "packed" if packing.use_varlen(model, device) else "grouped"
    skippable = sorted(k[1] for k in rows if k[0] == "rmexp" and k[1] != used)
    if set(a.skip) - set(skippable):
        p.error(f"--skip {','.join(a.skip)}: rows that can be skipped here are {', '.join(skippable)}")
    rows = {k: fn for k, fn in rows.items() if k[0] == "padded" or k[1] not in a.skip}

    def progress(msg: str) -> None:  # a GPU run can take minutes: say where it is
        print(f"  [{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    progress(f"model built, {len(seqs)} texts ({tokens} tokens) on {tp.device_name(device)}")
    failed = {}
    for (impl, setting), fn in list(rows.items()):  # untimed: first calls pay for allocations and kernel selection
        try:
            fn()
            tp._sync(device)
        except Exception as e:  # an optional row (a compile, a budget too large) is reported, not fatal
            if impl == "padded" or setting == used:
                raise
            err = failed[f"{impl}/{setting}"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"[:300]
            del rows[(impl, setting)]
            progress(f"warm-up {impl}/{setting} FAILED: {err}")
            continue
        progress(f"warm-up {impl}/{setting} done")
    load_start = os.getloadavg()
    times: dict = {k: [] for k in rows}
    scores = {}
    for _ in range(a.repeats):  # interleaved, best of: load only ever slows a run down
        for key, fn in rows.items():
            tp._sync(device)
            t0 = time.perf_counter()
            scores[key] = fn()
            tp._sync(device)
            times[key].append(time.perf_counter() - t0)
            progress(f"repeat {len(times[key])}/{a.repeats} {'/'.join(key)}: {times[key][-1]:.2f}s")
    load_end = os.getloadavg()
    ref = scores[("padded", "fixed")]
    report = {"benchmark": "scoring", "preset": a.preset, "device": tp.device_name(device), "config": preset,
              "shape": {k: getattr(cfg, k) for k in ("hidden", "layers", "heads", "kv_heads", "vocab", "min_len",
                                                      "max_len")},
              "n_texts": len(seqs), "tokens": tokens, "loadavg_start": load_start, "loadavg_end": load_end,
              "threads": torch.get_num_threads(), "rows": [], "failed_rows": failed}
    for (impl, setting), ts in times.items():
        best = min(ts)
        report["rows"].append({"impl": impl, "setting": setting, "seconds": best, "repeats_seconds": ts,
                               "texts_per_s": len(seqs) / best, "tokens_per_s": tokens / best,
                               "max_abs_diff_vs_padded": float((scores[(impl, setting)] - ref).abs().max())})
    base = report["rows"][0]["texts_per_s"]
    la = lambda x: "/".join(f"{v:.2f}" for v in x)  # noqa: E731
    print(f"RM scoring  preset={a.preset}  device: {report['device']}  threads: {report['threads']}  load avg "
          f"start {la(load_start)}, end {la(load_end)}")
    print(f"model: Qwen2 {report['shape']}, {cfg.precision}; {len(seqs)} texts, {tokens} tokens, padded batch "
          f"{preset['batch']}, packed budget {preset['budget']} tokens, best of {a.repeats}")
    print(f"{'impl':6} | {'setting':14} | {'texts/s':>10} | {'tokens/s':>12} | {'vs padded fixed':>15} | max |diff|")
    for r in report["rows"]:
        print(f"{r['impl']:6} | {r['setting']:14} | {r['texts_per_s']:>10,.0f} | {r['tokens_per_s']:>12,.0f} | "
              f"{r['texts_per_s'] / base:>14.2f}x | {r['max_abs_diff_vs_padded']:.1e}")
    ratios = {r["setting"]: r["texts_per_s"] / base for r in report["rows"] if r["impl"] == "rmexp"}
    report["ratio"], report["score_texts_uses"] = ratios[used], used
    for row, err in failed.items():
        print(f"{row}: failed ({err})")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
    print(f"ratio rmexp {used} (what score_texts runs here) / padded fixed = {ratios[used]:.2f}x; "
          + ", ".join(f"rmexp {k} = {v:.2f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
