"""Batched sampling with a KV cache, for best-of-N samples and PPO rollouts.

Prompts of different lengths are left-padded into one batch (positions count real tokens only, so GPT-2's
absolute positions and RoPE see what an unpadded prompt sees); the prompt is run once, then one token per step
against the cache. Draws are made on a CPU `torch.Generator` whatever the model's device, so a seed gives the
same stream everywhere, and all rows of a batch draw from it in order: the same prompts, n, seed and batch size
give the same samples.

Speed (tests/test_sampling.py checks the token ids against a plain KV-cache sampler with the same draws, on Llama,
GPT-2 and Qwen2 shapes, and the draws against the distribution they sample):
- each distinct prompt is prefilled once (best-of-N repeats every prompt n times) and its cache copied to its
  rows; a row's arithmetic does not depend on the other rows of the batch;
- keys and values go into buffers allocated once (no `torch.cat` of the whole cache every token);
- rows that have ended leave the batch once a quarter of it has ended (they only ever drew pad);
- a token is drawn by inverting the row's cumulative distribution at one float64 uniform (`draw_tokens`), so a
  step costs one uniform per row, not one exponential per vocabulary cell as `torch.multinomial` does
  (`SAMPLER_VERSION` 3: the same distribution, other draws than version 2's multinomial). Every row draws its
  uniform, ended or not, so the stream does not depend on when rows leave the batch;
- `sample_texts` runs batches of up to 2048 rows (the toy BoN default's 30,784 rows in 16 batches, not 61 of 512):
  the per-step cost is mostly fixed overhead at these model sizes; a batch's cache positions (rows x (longest
  prompt + new tokens)) stay within `BATCH_TOKENS`, which bounds the KV cache of a real policy's long prompts.
"""
from __future__ import annotations

import inspect
from collections.abc import Collection

import torch
from torch import Tensor
from transformers.cache_utils import DynamicLayer

SAMPLER_VERSION = 3  # in every cache key of drawn samples: bump when the same seed would draw other samples
BATCH_ROWS = 2048  # rows per generate call in sample_texts: the per-step cost is mostly fixed overhead at toy sizes
BATCH_TOKENS = 2 ** 19  # and at most this many cache positions a batch (a 1.5B Qwen2 in bf16: ~15 GB of keys/values)
COMPACT_AT = 0.75  # drop ended rows from the batch once at most this fraction of its rows is still running


def _cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` during 5.x (the old name warns, then goes away)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _BufferLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in buffers of a fixed capacity: `update` writes the new
    position in place and returns views of the filled part (the same shapes a DynamicLayer returns)."""

    def __init__(self, keys: Tensor, values: Tensor, capacity: int):
        super().__init__()
        B, H, L, D = keys.shape
        self.kbuf = keys.new_empty((B, H, capacity, D))
        self.vbuf = values.new_empty((B, values.shape[1], capacity, values.shape[-1]))
        self.kbuf[:, :, :L] = keys
        self.vbuf[:, :, :L] = values
        self.length, self.device, self.is_initialized = L, keys.device, True
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self.kbuf[:, :, :self.length], self.vbuf[:, :, :self.length]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        n = key_states.shape[-2]
        self.kbuf[:, :, self.length:self.length + n] = key_states
        self.vbuf[:, :, self.length:self.length + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def keep_rows(self, rows: Tensor) -> None:
        self.kbuf, self.vbuf = self.kbuf.index_select(0, rows), self.vbuf.index_select(0, rows)
        self._views()


def draw_tokens(probs: Tensor, u: Tensor) -> Tensor:
    """One token per row of `probs` [B, V] (each row a distribution, float32 on the CPU), by inverting its
    cumulative distribution at the row's uniform u [B] (float64 in [0, 1)): the first index whose cumulative
    probability (float64) exceeds u * total. A zero-probability cell is never drawn; a non-finite row raises as
    `torch.multinomial` does."""
    cdf = probs.double().cumsum_(-1)
    total = cdf[:, -1]
    if not bool(torch.isfinite(total).all()) or not bool((total > 0).all()):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    idx = torch.searchsorted(cdf, (u * total)[:, None], right=True).squeeze(1)
    return idx.clamp_(max=probs.shape[-1] - 1)  # u * total rounds up to total only in the last ulp


@torch.no_grad()
def generate(model, queries: list[list[int]], max_new_tokens: int, temperature: float,
             eos_id: int | Collection[int], pad_id: int, generator: torch.Generator) -> Tensor:
    """Sample up to max_new_tokens per prompt (pure sampling at `temperature`): [B, T], pad after eos.
    `eos_id` may be several stop ids (eos and a chat template's end-of-turn token): a row ends at any of them.

    T is max_new_tokens, or fewer when every row has ended (same contract as `rmexp.ppo.generate`, the
    cache-free reference this is tested against)."""
    dev = next(model.parameters()).device
    B = len(queries)
    width = max(map(len, queries))
    first: dict[tuple[int, ...], int] = {}
    of_row = [first.setdefault(tuple(q), len(first)) for q in queries]  # each row's distinct prompt
    distinct = list(first)
    U = len(distinct)
    ids = torch.full((U, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width + max_new_tokens), dtype=torch.long)  # every new position is attended
    attn[:, width:] = 1
    for i, q in enumerate(distinct):
        ids[i, width - len(q):] = torch.tensor(q, dtype=torch.long)
    for i, q in enumerate(queries):
        attn[i, width - len(q):width] = 1
    pos = (attn[:, :width].cumsum(1) - 1).clamp(min=0)
    expand = torch.tensor(of_row, dtype=torch.long)
    prompt_rows = torch.tensor([of_row.index(u) for u in range(U)], dtype=torch.long)
    ids, attn, pos = ids.to(dev), attn.to(dev), pos.to(dev)
    out = model(input_ids=ids, attention_mask=attn[prompt_rows.to(dev), :width], position_ids=pos[prompt_rows.to(dev)],
                use_cache=True)
    cache_kwarg = _cache_kwarg(model)
    cache = getattr(out, cache_kwarg)
    expand_dev = expand.to(dev)
    for li, layer in enumerate(cache.layers):  # distinct prompts -> rows, into buffers of the final length
        if type(layer) is DynamicLayer:
            cache.layers[li] = _BufferLayer(layer.keys.index_select(0, expand_dev),
                                            layer.values.index_select(0, expand_dev), width + max_new_tokens)
        else:  # sliding-window and other layers keep their own update: only their rows are copied
            layer.batch_select_indices(expand_dev)
    logits = out.logits[:, -1].index_select(0, expand_dev)
    next_pos = pos[:, -1:] + 1
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    stop = torch.tensor([eos_id] if isinstance(eos_id, int) else sorted(eos_id), dtype=torch.long)
    running = torch.arange(B)  # rows in the model's batch (the rows of `logits`), ascending
    steps = 0
    for t in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
        u = torch.rand(B, dtype=torch.float64, generator=generator)  # every row draws: the stream is row-aligned
        nxt_running = draw_tokens(probs, u.index_select(0, running))
        nxt = torch.full((B,), pad_id, dtype=torch.long)
        nxt[running] = nxt_running
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        done |= torch.isin(nxt, stop)
        steps = t + 1
        if bool(done.all()) or t + 1 == max_new_tokens:
            break
        live = ~done.index_select(0, running)
        if int(live.sum()) <= COMPACT_AT * len(running):
            keep = live.nonzero().squeeze(1)
            running = running.index_select(0, keep)
            keep_dev = keep.to(dev)
            for layer in cache.layers:
                if isinstance(layer, _BufferLayer):
                    layer.keep_rows(keep_dev)
                else:
                    layer.batch_select_indices(keep_dev)
            attn, next_pos = attn.index_select(0, keep_dev), next_pos.index_select(0, keep_dev)
        L = width + t + 1
        out = model(input_ids=nxt.index_select(0, running)[:, None].to(dev), attention_mask=attn[:, :L],
                    position_ids=next_pos, use_cache=True, **{cache_kwarg: cache})
        cache, logits = getattr(out, cache_kwarg), out.logits[:, -1]
        next_pos = next_pos + 1
    return tokens[:, :steps].to(dev)


def sample_texts(model, tok, queries: list[list[int]], n: int, temperature: float, max_new_tokens: int,
                 seed: int, batch_rows: int = BATCH_ROWS, stop_ids: Collection[int] | None = None) -> list[list[str]]:
    """n sampled responses per prompt (token ids), decoded; prompts are repeated n times and run in batches
    of up to `batch_rows` rows (fewer where the longest prompt would take the cache past `BATCH_TOKENS`), all
    drawing from one generator seeded with `seed`. Rows end at eos, or at any of
    `stop_ids` when given (special tokens, dropped by the decoding)."""
    model.eval()
    rows = [q for q in queries for _ in range(n)]
    batch_rows = max(1, min(batch_rows, BATCH_TOKENS // (max(map(len, queries)) + max_new_tokens)))
    gen = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for s in range(0, len(rows), batch_rows):
        out = generate(model, rows[s:s + batch_rows], max_new_tokens, temperature,
                       tok.eos_token_id if stop_ids is None else stop_ids, tok.pad_token_id, gen)
        texts += tok.batch_decode(out.cpu(), skip_special_tokens=True)
    return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(queries))]
