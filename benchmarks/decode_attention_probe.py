"""Decode attention on CPU: SDPA over per-row copies of the prompt's keys (what rmexp.sampling holds) vs a shared
prompt prefix attended once per prompt group plus each row's own suffix (a candidate for best-of-N sampling).

    python benchmarks/decode_attention_probe.py            # toy shapes: 72 x 16 and 32 x 64 rows, prompt 20, D 16

Times the attention op alone, one torch thread, at suffix lengths 1, 12 and 24 (early, middle and late in a
24-token generation), and prints the ratio and the largest difference of the two outputs (the same attention up to
float rounding; tests/test_benchmark_script.py checks them equal on a tiny shape).
"""
from __future__ import annotations

import argparse
import time

import torch

import rmexp  # noqa: F401  (the pinned CPU numerics, as in every benchmark)


def make(U: int, n: int, H: int, P: int, T: int, D: int, seed: int = 0):
    """Queries of U * n rows (n a prompt, rows of a prompt contiguous), the U prompts' keys / values left-padded to P
    with their masks, each row's T suffix keys / values; and the per-row layout the sampler holds."""
    g = torch.Generator().manual_seed(seed)
    B = U * n
    q = torch.randn(B, H, 1, D, generator=g)
    kp, vp = torch.randn(U, H, P, D, generator=g), torch.randn(U, H, P, D, generator=g)
    ks, vs = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
    plen = torch.randint(max(1, P // 2), P + 1, (U,), generator=g)
    pmask = torch.arange(P)[None, :] >= (P - plen)[:, None]  # left padding
    K = torch.cat([kp.repeat_interleave(n, 0), ks], 2)
    V = torch.cat([vp.repeat_interleave(n, 0), vs], 2)
    mask = torch.cat([pmask.repeat_interleave(n, 0), torch.ones(B, T, dtype=torch.bool)], 1)[:, None, None, :]
    return q, kp, vp, ks, vs, pmask, K, V, mask


def per_row(q, K, V, mask, scale: float):
    return torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=mask, scale=scale)


def shared_prefix(q, kp, vp, ks, vs, pmask, scale: float):
    """Scores against the prefix as one matmul per prompt group, against the suffix per row; one softmax over both."""
    U, H, P, D = kp.shape
    B, T = q.shape[0], ks.shape[2]
    n = B // U
    qg = q.view(U, n, H, D).transpose(1, 2)                                                 # [U, H, n, D]
    sp = (qg @ kp.transpose(-1, -2) * scale).masked_fill(~pmask[:, None, None, :], float("-inf"))
    ss = (q @ ks.transpose(-1, -2)).view(U, n, H, T).transpose(1, 2) * scale               # [U, H, n, T]
    w = torch.softmax(torch.cat([sp, ss], -1), -1)
    out_p = (w[..., :P] @ vp).transpose(1, 2).reshape(B, H, 1, D)
    out_s = w[..., P:].transpose(1, 2).reshape(B, H, 1, T) @ vs
    return out_p + out_s


def run(U: int, n: int, H: int, P: int, T: int, D: int, reps: int) -> dict[str, float]:
    q, kp, vp, ks, vs, pmask, K, V, mask = make(U, n, H, P, T, D)
    scale = D ** -0.5
    fns = {"per-row sdpa": lambda: per_row(q, K, V, mask, scale),
           "shared prefix": lambda: shared_prefix(q, kp, vp, ks, vs, pmask, scale)}
    diff = (fns["per-row sdpa"]() - fns["shared prefix"]()).abs().max().item()
    ms = {}
    for name, f in fns.items():
        f()
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        ms[name] = (time.perf_counter() - t0) / reps * 1e3
    return {"sdpa_ms": ms["per-row sdpa"], "shared_ms": ms["shared prefix"], "max_diff": diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=20, help="prompt width (left-padded)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for U, n in ((72, 16), (32, 64)):
        for T in (1, 12, 24):
            r = run(U, n, args.heads, args.prompt, T, args.head_dim, args.reps)
            print(f"rows {U} x {n}, prompt {args.prompt}, suffix {T:2d}: per-row sdpa {r['sdpa_ms']:.3f} ms, shared prefix "
                  f"{r['shared_ms']:.3f} ms, sdpa / shared {r['sdpa_ms'] / r['shared_ms']:.2f}x, max |diff| {r['max_diff']:.1e}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
