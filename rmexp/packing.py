"""Padding-free packed forward passes for Hugging Face causal models (Llama, Qwen2, GPT-2 shapes).

Sequences are laid back to back in `rows` buffers of `row_len` tokens (first fit; a sequence never spans two
rows). Each sequence keeps its own positions (restarting at 0: GPT-2's absolute position embeddings and RoPE
both see the positions an unpacked forward sees), and attention stays inside each sequence:

- on CUDA in half precision, `torch.nn.attention.varlen.varlen_attn` (flash attention over cumulative sequence
  lengths, `window_size=(-1, 0)` = causal), registered as the transformers attention implementation
  `rmexp_packed`; the pad tail of a row is one more (ignored) sequence;
- elsewhere, the same registered implementation runs SDPA with an explicit block-diagonal causal boolean mask
  (pad tokens attend to themselves only, so no row of the softmax is empty).

Unpacked calls (2-D padding masks, as in `rmexp.rm.last_token_rewards`) go through the same implementation and
fall back to transformers' own SDPA path, so one model serves both.
Packing is planned on the host from Python lengths: building a batch needs no device sync.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "rmexp_packed"
PACKED_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")

try:  # torch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch: the mask path only
    varlen_attn = None
# torch 2.11's varlen_attn has no `enable_gqa` (later ones do): there the kv heads are shared by hand
VARLEN_HAS_GQA = varlen_attn is not None and "enable_gqa" in inspect.signature(varlen_attn).parameters


# ---------------------------------------------------------------------------------------------------
# Planning and building packed batches (host side)
def first_fit(lengths: list[int], rows: int, row_len: int) -> list[int] | None:
    """Row of each sequence, placed in order into the first row with room; None when one does not fit."""
    free = [row_len] * rows
    where = []
    for n in lengths:
        row = next((r for r in range(rows) if free[r] >= n), None)
        if row is None:
            return None
        free[row] -= n
        where.append(row)
    return where


def rows_needed(lengths: list[int], row_len: int) -> int:
    """Fewest rows first fit needs for these lengths in this order (each length <= row_len)."""
    free: list[int] = []
    for n in lengths:
        if n > row_len:
            raise ValueError(f"a sequence of {n} tokens does not fit a row of {row_len}")
        row = next((r for r, f in enumerate(free) if f >= n), None)
        if row is None:
            free.append(row_len - n)
        else:
            free[row] -= n
    return len(free)


def _place(free: list[int], lengths) -> list[int] | None:
    """`free` after placing `lengths` first fit, or None when one does not fit (free itself is not changed)."""
    free = list(free)
    for n in lengths:
        row = next((r for r, f in enumerate(free) if f >= n), None)
        if row is None:
            return None
        free[row] -= n
    return free


LOOKAHEAD = 16  # pairs a budget may skip before it closes: fills budgets to ~0.9+ instead of ~0.8


def budget_batches(pair_lengths: list[tuple[int, int]], order: list[int], rows: int, row_len: int,
                   lookahead: int = LOOKAHEAD) -> list[list[int]]:
    """Pairs in `order`, cut into steps that each fill a fixed budget of `rows` x `row_len` tokens (first fit,
    chosen then rejected). A pair that does not fit is deferred to the next budget, which takes it first; a
    budget closes after `lookahead` such misses. Every pair lands in exactly one step."""
    queue, batches = list(order), []
    while queue:
        free, batch, rest, misses = [row_len] * rows, [], [], 0
        for pos, i in enumerate(queue):
            if misses > lookahead:
                rest.extend(queue[pos:])
                break
            placed = _place(free, pair_lengths[i])
            if placed is None:
                misses += 1
                rest.append(i)
                continue
            free = placed
            batch.append(i)
        if not batch:
            raise ValueError(f"pair {queue[0]} ({pair_lengths[queue[0]]} tokens) does not fit a budget of {rows} "
                             f"rows of {row_len} tokens")
        batches.append(batch)
        queue = rest
    return batches


@dataclass
class Packed:
    input_ids: torch.Tensor     # [rows, row_len]
    position_ids: torch.Tensor  # [rows, row_len], restarting at 0 per sequence (0 on pad)
    segment: torch.Tensor       # [rows, row_len], sequence index per token, -1 on pad
    last_index: torch.Tensor    # [n_seqs]: flat index (row * row_len + col) of each sequence's last token
    cu_seqlens: torch.Tensor    # int32 [max_segments + 1]: flat boundaries (pad tails are segments too)
    max_seqlen: int             # an upper bound on any segment's length (static: row_len unless given)
    real_tokens: int

    def to(self, device) -> "Packed":
        # Pinned host memory: the copy is queued on the stream, not a host sync that waits for the last step.
        pin = torch.device(device).type == "cuda"
        move = lambda t: (t.pin_memory() if pin else t).to(device, non_blocking=True)  # noqa: E731
        return Packed(move(self.input_ids), move(self.position_ids), move(self.segment), move(self.last_index),
                      move(self.cu_seqlens), self.max_seqlen, self.real_tokens)


def pack_sequences(seqs: list[list[int]], rows: int, row_len: int, pad_id: int,
                   max_segments: int | None = None, max_seqlen: int | None = None) -> Packed:
    """Pack token sequences into [rows, row_len] (first fit, in order). `max_segments` fixes the length of
    `cu_seqlens` (padded with empty segments) so that compiled graphs see one shape; `max_seqlen` is the
    static bound passed to the varlen kernel (pad tails are split into chunks no longer than it)."""
    where = first_fit([len(s) for s in seqs], rows, row_len)
    if where is None:
        raise ValueError(f"{len(seqs)} sequences ({sum(map(len, seqs))} tokens) do not fit {rows} rows of "
                         f"{row_len} tokens")
    max_seqlen = max_seqlen or row_len
    # Built in numpy, one buffer copy per sequence (the packer runs on the host every step: keep it cheap).
    ids = np.full(rows * row_len, pad_id, dtype=np.int64)
    pos = np.zeros(rows * row_len, dtype=np.int64)
    seg = np.full(rows * row_len, -1, dtype=np.int64)
    ramp = np.arange(max(row_len, 1), dtype=np.int64)
    fill = [0] * rows
    last = []
    bounds: list[list[int]] = [[] for _ in range(rows)]  # segment lengths per row, in row order
    for k, (s, r) in enumerate(zip(seqs, where)):
        n, start = len(s), r * row_len + fill[r]
        if n > max_seqlen:
            raise ValueError(f"sequence {k} has {n} tokens, more than max_seqlen={max_seqlen}")
        ids[start:start + n] = s
        pos[start:start + n] = ramp[:n]
        seg[start:start + n] = k
        last.append(start + n - 1)
        bounds[r].append(n)
        fill[r] += n
    lengths = []
    for r in range(rows):
        lengths += bounds[r]
        tail = row_len - fill[r]
        while tail > 0:  # the pad tail: its own segment(s), so nothing real attends to it
            lengths.append(min(tail, max_seqlen))
            tail -= lengths[-1]
    if max_segments is None:
        max_segments = len(lengths)
    if len(lengths) > max_segments:
        raise ValueError(f"{len(lengths)} segments exceed max_segments={max_segments}")
    cu = torch.zeros(max_segments + 1, dtype=torch.int32)
    cu[1:len(lengths) + 1] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    cu[len(lengths) + 1:] = rows * row_len  # empty segments at the end keep the shape static
    shape = (rows, row_len)
    return Packed(torch.from_numpy(ids).view(shape), torch.from_numpy(pos).view(shape),
                  torch.from_numpy(seg).view(shape), torch.tensor(last, dtype=torch.long), cu, max_seqlen,
                  sum(map(len, seqs)))


def block_causal_mask(segment: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] boolean (True = may attend): same sequence and not in the future; pad tokens see only
    themselves (a softmax row is never empty, and no real token sees a pad token)."""
    L = segment.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=segment.device).tril()
    same = segment[:, :, None] == segment[:, None, :]
    real = (segment >= 0)[:, :, None]
    eye = torch.eye(L, dtype=torch.bool, device=segment.device)
    return ((same & real & causal) | eye)[:, None]


# ---------------------------------------------------------------------------------------------------
# The attention implementation
def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: varlen flash attention when the call carries `cu_seq_lens_q`
    and runs on CUDA in half precision; otherwise SDPA with whatever mask the call carries (the packed
    block-diagonal mask, or transformers' own padding mask for unpacked calls)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:  # the packer chose varlen (use_varlen): the mask it passed is only a placeholder
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else query.dtype
        if not query.is_cuda or dtype not in (torch.float16, torch.bfloat16) or varlen_attn is None:
            raise RuntimeError(f"packed attention: cu_seqlens given but varlen attention cannot run here "
                               f"(device {query.device}, dtype {dtype}); pack without them (use_varlen=False)")
        # RoPE in fp32 (Llama, Qwen2 under autocast) promotes q and k: flash attention wants them in half
        B, H, T, D = query.shape
        q = query.transpose(1, 2).reshape(B * T, H, D).to(dtype)
        k = key.transpose(1, 2).reshape(B * T, key.shape[1], D).to(dtype)
        v = value.transpose(1, 2).reshape(B * T, value.shape[1], D).to(dtype)
        out = causal_varlen(q, k, v, cu, kwargs["max_length_q"], scaling)
        return out.view(B, T, H, D), None
    rest = {k: v for k, v in kwargs.items() if k not in PACKED_KWARGS}
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **rest)


def causal_varlen(q, k, v, cu_seqlens, max_seqlen: int, scale: float | None, kernel=None, has_gqa: bool | None = None):
    """Causal attention within each cu_seqlens segment; q [T, H, D], k and v [T, H_kv, D] with H_kv dividing H
    (query head h reads kv head h // (H / H_kv), as transformers' repeat_kv)."""
    kernel = varlen_attn if kernel is None else kernel
    has_gqa = VARLEN_HAS_GQA if has_gqa is None else has_gqa
    groups = q.shape[1] // k.shape[1]
    extra = {}
    if groups > 1 and has_gqa:
        extra["enable_gqa"] = True
    elif groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return kernel(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, scale=scale, window_size=(-1, 0), **extra)


AttentionInterface.register(ATTN_IMPLEMENTATION, packed_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)  # unpacked calls get SDPA's masks


def enable_packed_attention(model) -> None:
    """Route the model's attention through `packed_attention` (packed and unpacked calls both work after)."""
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)


def use_varlen(model, packed_device: torch.device) -> bool:
    """Whether attention will run the varlen kernel (so no dense mask need be built)."""
    if varlen_attn is None or packed_device.type != "cuda":
        return False
    dtype = next(model.parameters()).dtype
    return dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled("cuda")


# ---------------------------------------------------------------------------------------------------
# Forward passes
def packed_hidden(base_model, model_for_dtype, packed: Packed) -> torch.Tensor:
    """Last hidden states of a packed batch, [rows * row_len, hidden]."""
    dev = packed.input_ids.device
    kwargs = {}
    if use_varlen(model_for_dtype, dev):
        # The 4-D tensor only tells transformers "mask already prepared" (it is returned as is, never read);
        # attention is delimited by cu_seqlens.
        mask = packed.segment[:, None, None, :1] >= 0
        kwargs = dict(cu_seq_lens_q=packed.cu_seqlens, cu_seq_lens_k=packed.cu_seqlens,
                      max_length_q=packed.max_seqlen, max_length_k=packed.max_seqlen)
    else:
        mask = block_causal_mask(packed.segment)
    out = base_model(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=mask,
                     use_cache=False, **kwargs)[0]
    return out.reshape(-1, out.shape[-1])


def packed_rewards(model, packed: Packed, base=None) -> torch.Tensor:
    """Score head of an `AutoModelForSequenceClassification(num_labels=1)` at each sequence's last token;
    `base` runs the transformer under the head instead of `model.base_model` (its compiled form)."""
    hidden = packed_hidden(model.base_model if base is None else base, model, packed)
    return model.score(hidden[packed.last_index]).squeeze(-1).float()


def pack_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int, row_len: int, rows: int | None = None,
               max_segments: int | None = None, max_seqlen: int | None = None) -> Packed:
    """Chosen then rejected of each pair, in turn, first fit; rows = the fewest that hold them unless fixed.
    Sequence order in the result: c_0, r_0, c_1, r_1, ..."""
    seqs = [s for pair in pairs for s in pair]
    rows = rows or rows_needed([len(s) for s in seqs], row_len)
    return pack_sequences(seqs, rows, row_len, pad_id, max_segments, max_seqlen)


def packed_pair_rewards(model, packed: Packed, base=None) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = packed_rewards(model, packed, base)
    return rewards[0::2], rewards[1::2]


# ---------------------------------------------------------------------------------------------------
# Training layout
ROW_ALIGN = 64  # flat (varlen) budgets are rounded up to a multiple of this: tensor-core friendly shapes


def train_layout(pair_lengths: list[tuple[int, int]], pairs_per_step: int, max_length: int,
                 flat: bool) -> tuple[int, int]:
    """(rows, row_len) of a fixed token budget that holds `pairs_per_step` pairs of mean length, plus one
    longest pair of slack. `flat` (varlen attention will run: see `use_varlen`): one row, as attention cost
    does not grow with the budget. Otherwise rows of `max_length` tokens: the explicit mask costs
    rows * row_len^2, not budget^2."""
    mean_pair = sum(c + r for c, r in pair_lengths) / max(1, len(pair_lengths))
    longest = max(c + r for c, r in pair_lengths)
    budget = math.ceil(pairs_per_step * mean_pair) + longest
    if flat:
        return 1, -(-budget // ROW_ALIGN) * ROW_ALIGN
    return max(2, -(-budget // max_length)), max_length


def max_segments(rows: int, row_len: int, min_len: int, max_seqlen: int) -> int:
    """Most segments a [rows, row_len] buffer can hold: real sequences of >= min_len tokens, plus the pad
    tail of each row (split into chunks of <= max_seqlen). Fixes `cu_seqlens`' length for compiled graphs."""
    return rows * row_len // max(1, min_len) + rows * (-(-row_len // max_seqlen))


# ---------------------------------------------------------------------------------------------------
# Scoring (no gradients)
# Least flat scoring budget under varlen attention. Measured on an H200 (benchmarks/scoring.py --preset gpu,
# Qwen2-0.5B shape, 1,024 texts of 128..1,024 tokens, 2026-11-27): 4,096-token budgets ran 0.85x padded batches of 32
# (launch-bound), 16,384 1.79x, 65,536 1.81x, 262,144 1.55x.
VARLEN_SCORE_TOKENS = 65536


def score_layout(budget_tokens: int, max_len: int, flat: bool) -> tuple[int, int]:
    """(rows, row_len) of a scoring budget: one flat row under varlen attention, rows of `max_len` otherwise."""
    if flat:
        return 1, max(max_len, budget_tokens)
    return max(1, budget_tokens // max_len), max_len


@torch.no_grad()
def packed_scores(model, seqs: list[list[int]], pad_id: int, budget_tokens: int, autocast=None,
                  fixed_segments: bool = False) -> torch.Tensor:
    """Reward of every sequence (in input order), longest first, first fit into fixed budgets of
    `budget_tokens` tokens; every batch has the same shape. `fixed_segments`: `cu_seqlens` of one length too,
    so that a compiled model sees one graph (off by default: the empty segments cost varlen kernel blocks).
    Returns float32 rewards on the CPU."""
    device = next(model.parameters()).device
    max_len = max(map(len, seqs))
    with autocast if autocast is not None else contextlib.nullcontext():
        rows, row_len = score_layout(budget_tokens, max_len, use_varlen(model, device))
    segments = max_segments(rows, row_len, min(map(len, seqs)), max_len) if fixed_segments else None
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out = torch.empty(len(seqs), dtype=torch.float32)
    start = 0
    while start < len(order):
        free, end = [row_len] * rows, start
        while end < len(order):  # first fit decreasing: the batch closes at the first sequence that fits nowhere
            n = len(seqs[order[end]])
            row = next((r for r in range(rows) if free[r] >= n), None)
            if row is None:
                break
            free[row] -= n
            end += 1
        idx = order[start:end]
        packed = pack_sequences([seqs[i] for i in idx], rows, row_len, pad_id, segments, max_len).to(device)
        with autocast if autocast is not None else contextlib.nullcontext():
            out[idx] = packed_rewards(model, packed).cpu()
        start = end
    return out
