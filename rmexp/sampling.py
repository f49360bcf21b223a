"""Batched sampling with a KV cache, for best-of-N samples and PPO rollouts.

Prompts of different lengths are left-padded into one batch (positions count real tokens only, so GPT-2's
absolute positions and RoPE see what an unpadded prompt sees); the prompt is run once, then one token per step
against the cache. Draws are made on a CPU `torch.Generator` whatever the model's device, so a seed gives the
same stream everywhere, and all rows of a batch draw from it in order: the same prompts, n, seed and batch size
give the same samples.
"""
from __future__ import annotations

import inspect
from collections.abc import Collection

import torch
from torch import Tensor

SAMPLER_VERSION = 2  # in every cache key of drawn samples: bump when the same seed would draw other samples


def _cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` during 5.x (the old name warns, then goes away)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


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
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    for i, q in enumerate(queries):
        ids[i, width - len(q):] = torch.tensor(q, dtype=torch.long)
        attn[i, width - len(q):] = 1
    ids, attn = ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    cache_kwarg = _cache_kwarg(model)
    cache, logits = getattr(out, cache_kwarg), out.logits[:, -1]
    next_pos = pos[:, -1:] + 1
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    stop = torch.tensor([eos_id] if isinstance(eos_id, int) else sorted(eos_id), dtype=torch.long)
    steps = 0
    for t in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        done |= torch.isin(nxt, stop)
        steps = t + 1
        if bool(done.all()) or t + 1 == max_new_tokens:
            break
        attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=dev)], dim=1)
        out = model(input_ids=nxt[:, None].to(dev), attention_mask=attn, position_ids=next_pos,
                    use_cache=True, **{cache_kwarg: cache})
        cache, logits = getattr(out, cache_kwarg), out.logits[:, -1]
        next_pos = next_pos + 1
    return tokens[:, :steps].to(dev)


def sample_texts(model, tok, queries: list[list[int]], n: int, temperature: float, max_new_tokens: int,
                 seed: int, batch_rows: int = 512, stop_ids: Collection[int] | None = None) -> list[list[str]]:
    """n sampled responses per prompt (token ids), decoded; prompts are repeated n times and run in batches
    of up to `batch_rows` rows, all drawing from one generator seeded with `seed`. Rows end at eos, or at any of
    `stop_ids` when given (special tokens, dropped by the decoding)."""
    model.eval()
    rows = [q for q in queries for _ in range(n)]
    gen = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for s in range(0, len(rows), batch_rows):
        out = generate(model, rows[s:s + batch_rows], max_new_tokens, temperature,
                       tok.eos_token_id if stop_ids is None else stop_ids, tok.pad_token_id, gen)
        texts += tok.batch_decode(out.cpu(), skip_special_tokens=True)
    return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(queries))]
