"""Policy sampling throughput for best-of-N and PPO rollouts on the toy world: before vs rmexp.sampling.

    python benchmarks/sampling.py                       # 72 prompts x 16 samples, 24 new tokens (the BoN default when issue #10 was filed; today --prompts 481 --n 64)
    python benchmarks/sampling.py --prompts 8 --n 2     # a quick check

Workload: a toy_llama_s-shaped policy (Llama, hidden 64, 2 layers, 4 heads; random init, so nothing is
built first), `prompts` prompts of random token ids with lengths uniform in [min_len, max_len], `n` samples
each, up to `max_new_tokens` new tokens at temperature 1. Rows, all in one run on the same model and prompts:
- before / hf-generate: what `rmexp.zoo.sample` did (prompts grouped by length, `model.generate` with
  `num_return_sequences=n`, HF's own KV cache and sampling loop);
- before / no-cache: what PPO rollouts did (`rmexp.ppo.generate`: the whole prefix recomputed every token),
  in chunks of 64 rows as `rmexp.ppo.rollout`;
- rmexp / kv-cache: `rmexp.sampling.generate` (left-padded batches of up to `BATCH_ROWS` rows, KV cache).
Metric: samples per second, best of `--repeats`. The last line holds the ratios of rmexp / each before row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

PAD_ID, EOS_ID = 0, 1


def build_policy(hidden: int, layers: int, heads: int, vocab: int, seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=None)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


@torch.no_grad()
def hf_generate_grouped(model, queries, n: int, max_new_tokens: int, seed: int) -> int:
    """The former rmexp.zoo.sample, on token ids: one `generate` call per prompt length."""
    by_len: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        by_len.setdefault(len(q), []).append(i)
    produced = 0
    for length in sorted(by_len):
        torch.manual_seed(seed + length)
        x = torch.tensor([queries[i] for i in by_len[length]])
        gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0,
                             top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             eos_token_id=EOS_ID, pad_token_id=PAD_ID)
        produced += gen.shape[0]
    return produced


def no_cache(model, queries, n: int, max_new_tokens: int, seed: int) -> int:
    from rmexp.ppo import generate

    rows = [q for q in queries for _ in range(n)]
    g = torch.Generator().manual_seed(seed)
    for s in range(0, len(rows), 64):
        generate(model, rows[s:s + 64], max_new_tokens, 1.0, EOS_ID, PAD_ID, g)
    return len(rows)


def kv_cache(model, queries, n: int, max_new_tokens: int, seed: int) -> int:
    from rmexp.sampling import BATCH_ROWS, generate

    rows = [q for q in queries for _ in range(n)]
    g = torch.Generator().manual_seed(seed)
    for s in range(0, len(rows), BATCH_ROWS):  # as sample_texts batches toy rows (BATCH_TOKENS does not bind)
        generate(model, rows[s:s + BATCH_ROWS], max_new_tokens, 1.0, EOS_ID, PAD_ID, g)
    return len(rows)


def matmul_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                            **kwargs):
    """A candidate decode attention (not used by rmexp; `--matmul-decode`): one query token against the cache as
    matmul, masked softmax, matmul, where SDPA's CPU kernel is ~1.4x slower on these shapes. Other last bits than
    SDPA, so a sampler using it would draw other tokens now and then (a `SAMPLER_VERSION` bump). Prefill (more than
    one query token) stays SDPA."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scaling)
    if attention_mask is not None:  # sdpa_mask's boolean mask: True = attend
        scores.masked_fill_(~attention_mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), value).transpose(1, 2).contiguous(), None


def _register_matmul_decode() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("matmul_decode", matmul_decode_attention)
    AttentionMaskInterface.register("matmul_decode", sdpa_mask)
    return "matmul_decode"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=72, help="72 = BoN default (12 per domain x 6 domains)")
    p.add_argument("--n", type=int, default=16, help="samples per prompt (BoN default 16)")
    p.add_argument("--max-new-tokens", type=int, default=24, dest="max_new_tokens")
    p.add_argument("--min-len", type=int, default=8, dest="min_len")
    p.add_argument("--max-len", type=int, default=20, dest="max_len")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-no-cache", action="store_true", help="leave out the slow cache-free row")
    p.add_argument("--matmul-decode", action="store_true", dest="matmul_decode",
                   help="add a row: the kv-cache sampler with a matmul decode attention instead of SDPA (a candidate)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = build_policy(a.hidden, a.layers, a.heads, a.vocab)
    rng = np.random.default_rng(0)
    queries = [rng.integers(2, a.vocab, size=int(rng.integers(a.min_len, a.max_len + 1))).tolist()
               for _ in range(a.prompts)]
    rows = {("before", "hf-generate"): hf_generate_grouped, ("rmexp", "kv-cache"): kv_cache}
    if not a.skip_no_cache:
        rows = {("before", "hf-generate"): hf_generate_grouped, ("before", "no-cache"): no_cache,
                ("rmexp", "kv-cache"): kv_cache}
    if a.matmul_decode:
        impl_name = _register_matmul_decode()

        def kv_cache_matmul_decode(model, queries, n, max_new_tokens, seed):
            model.set_attn_implementation(impl_name)
            try:
                return kv_cache(model, queries, n, max_new_tokens, seed)
            finally:
                model.set_attn_implementation("sdpa")

        rows[("cand.", "matmul-decode")] = kv_cache_matmul_decode
    for fn in rows.values():  # untimed warm-up on a small slice
        fn(model, queries[:2], 2, 4, 0)
    load_start = os.getloadavg()
    times: dict = {k: [] for k in rows}
    counts = {}
    for _ in range(a.repeats):
        for key, fn in rows.items():
            t0 = time.perf_counter()
            counts[key] = fn(model, queries, a.n, a.max_new_tokens, 0)
            times[key].append(time.perf_counter() - t0)
    load_end = os.getloadavg()
    la = lambda x: "/".join(f"{v:.2f}" for v in x)  # noqa: E731
    print(f"sampling  threads {torch.get_num_threads()}  load avg start {la(load_start)}, end {la(load_end)}")
    print(f"policy: Llama hidden={a.hidden} layers={a.layers} heads={a.heads} vocab={a.vocab}; {a.prompts} prompts "
          f"x {a.n} samples, lengths {a.min_len}..{a.max_len}, {a.max_new_tokens} new tokens, best of {a.repeats}")
    report = {"benchmark": "sampling", "args": vars(a) | {"json": str(a.json)}, "loadavg_start": load_start,
              "loadavg_end": load_end, "rows": []}
    sps_of = {key: counts[key] / min(ts) for key, ts in times.items()}  # best of the repeats
    ours = sps_of[("rmexp", "kv-cache")]
    print(f"{'impl':6} | {'setting':13} | {'samples/s':>10} | {'rmexp kv-cache vs this':>22}")
    for (impl, setting), sps in sps_of.items():
        report["rows"].append({"impl": impl, "setting": setting, "samples_per_s": sps,
                               "repeats_seconds": times[(impl, setting)]})
        print(f"{impl:6} | {setting:13} | {sps:>10,.1f} | {ours / sps:>21.2f}x")
    ratios = {f"{r['impl']} {r['setting']}": ours / r["samples_per_s"] for r in report["rows"] if r["impl"] == "before"}
    if a.matmul_decode:
        cand, hf = sps_of[("cand.", "matmul-decode")], sps_of[("before", "hf-generate")]
        report["candidate_vs_hf_generate"] = cand / hf
        print(f"candidate matmul-decode / before hf-generate = {cand / hf:.2f}x; / rmexp kv-cache = {cand / ours:.2f}x")
    report["ratios"] = ratios
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
    print("ratio " + "; ".join(f"rmexp kv-cache / {k} = {v:.2f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
