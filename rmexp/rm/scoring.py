"""RM scoring without padding and without the work a reward does not read (CPU and any non-varlen device).

`grouped_scores` scores token sequences in groups of one length each: no pad token, no attention mask (plain
causal attention, the fast SDPA path), and each distinct sequence is scored once (best-of-N samples repeat).
A reward reads one vector, the last token's final hidden state. Every layer but the last must run on every
token (later tokens attend to them), but the last layer only needs its keys and values everywhere: its query,
attention output, MLP and the final norm run on the last token alone (`_last_token_layer`, for Llama-shaped
attention (Llama, Qwen2, Mistral) and GPT-2 blocks; other layers run whole). The layers before it run through
the model's own forward, stopped at the last layer's input.

Scores equal `rmexp.rm.last_token_rewards` on right-padded batches to float rounding
(tests/test_scoring.py); benchmarks/scoring.py measures the speed.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

LLAMA_LIKE_ATTENTION = ("LlamaAttention", "Qwen2Attention", "MistralAttention")


class _LastLayerInput(Exception):
    """Raised by a pre-hook on the last layer: carries its inputs, ends the model's forward there."""

    def __init__(self, args: tuple, kwargs: dict):
        super().__init__()
        self.args, self.kwargs = args, kwargs


def _stop(module, args, kwargs):
    raise _LastLayerInput(args, kwargs)


def _layers(base):
    """(decoder layers, final norm) of a Llama-like or GPT-2 base model, or None for other shapes."""
    if hasattr(base, "layers") and hasattr(base, "norm"):
        return base.layers, base.norm
    if hasattr(base, "h") and hasattr(base, "ln_f"):
        return base.h, base.ln_f
    return None


def _supported(layer) -> bool:
    """Whether `_last_token_layer` computes exactly what this layer's forward computes."""
    attn = getattr(layer, "self_attn", None)
    if attn is not None:
        return (type(attn).__name__ in LLAMA_LIKE_ATTENTION and getattr(attn, "sliding_window", None) is None
                and hasattr(layer, "input_layernorm") and hasattr(layer, "post_attention_layernorm"))
    attn = getattr(layer, "attn", None)
    return (type(layer).__name__ == "GPT2Block" and attn is not None and not attn.is_cross_attention
            and not attn.scale_attn_by_inverse_layer_idx and not attn.reorder_and_upcast_attn)


def _attend_last(q, k, v, scaling: float):
    """The last query against every key of its (unpadded) sequence: no mask, nothing in its future."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each kv head serves q.heads / kv.heads queries
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return F.scaled_dot_product_attention(q, k, v, scale=scaling)  # [B, H, 1, D]


def _last_token_layer(layer, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The layer's output at the last position only, [B, 1, hidden]."""
    B, L, _ = hidden.shape
    if hasattr(layer, "self_attn"):  # Llama-like: RoPE on q and k, separate projections
        attn = layer.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        cos, sin = kwargs["position_embeddings"]
        x = layer.input_layernorm(hidden)
        hd = attn.head_dim
        k = attn.k_proj(x).view(B, L, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(B, L, -1, hd).transpose(1, 2)
        q = attn.q_proj(x[:, -1:]).view(B, 1, -1, hd).transpose(1, 2)
        q = rope(q, q, cos[:, -1:], sin[:, -1:])[0]
        k = rope(k, k, cos, sin)[0]
        out = attn.o_proj(_attend_last(q, k, v, attn.scaling).transpose(1, 2).reshape(B, 1, -1))
        h = hidden[:, -1:] + out
        return h + layer.mlp(layer.post_attention_layernorm(h))
    attn = layer.attn  # GPT-2: one fused qkv projection (computed for every token: k and v need it anyway)
    q, k, v = attn.c_attn(layer.ln_1(hidden)).split(attn.split_size, dim=2)
    heads = lambda t: t.reshape(B, t.shape[1], -1, attn.head_dim).transpose(1, 2)  # noqa: E731
    out = _attend_last(heads(q[:, -1:]), heads(k), heads(v), attn.scaling)
    h = hidden[:, -1:] + attn.c_proj(out.transpose(1, 2).reshape(B, 1, -1))
    return h + layer.mlp(layer.ln_2(h))


def last_hidden(model, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden state of the last token of each row of `ids` ([B, L], no padding), [B, hidden]."""
    base = model.base_model
    found = _layers(base)
    if found is None or not _supported(found[0][-1]):
        return base(input_ids=ids, use_cache=False)[0][:, -1]
    layers, norm = found
    handle = layers[-1].register_forward_pre_hook(_stop, with_kwargs=True)
    try:
        base(input_ids=ids, use_cache=False)
        raise RuntimeError("scoring: the model's forward never reached its last layer")
    except _LastLayerInput as stop:
        hidden = stop.args[0] if stop.args else stop.kwargs["hidden_states"]
        kwargs = stop.kwargs
    finally:
        handle.remove()
    return norm(_last_token_layer(layers[-1], hidden, kwargs))[:, 0]


GROUP_TOKENS = 4096  # tokens a forward holds at most (score_texts' default budget); 1024-4096 measured alike


def grouped_scores(model, seqs: list[list[int]], batch_tokens: int = GROUP_TOKENS) -> torch.Tensor:
    """Reward of every sequence (input order), float32 on the CPU: distinct sequences only, in groups of equal
    length of at most `batch_tokens` tokens (at least one sequence)."""
    device = next(model.parameters()).device
    out = torch.empty(len(seqs), dtype=torch.float32)  # a normal tensor: made outside inference mode
    first: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(seqs):
        first.setdefault(tuple(s), []).append(i)
    by_len: dict[int, list[tuple[int, ...]]] = {}
    for s in first:
        by_len.setdefault(len(s), []).append(s)
    for n, group in sorted(by_len.items()):
        per = max(1, batch_tokens // n)
        for start in range(0, len(group), per):
            part = group[start:start + per]
            ids = torch.tensor(part, dtype=torch.long, device=device)
            with torch.inference_mode():
                rewards = model.score(last_hidden(model, ids)).squeeze(-1).float().cpu()
            for s, r in zip(part, rewards.tolist()):
                out[first[s]] = r
    return out
