"""Grouped scoring (rmexp.rm.scoring) against the padded reference (rmexp.rm.last_token_rewards)."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2Config, LlamaConfig, Qwen2Config

from rmexp import packing
from rmexp.rm import last_token_rewards, pad_batch
from rmexp.rm import scoring

PAD = 0


def _model(kind: str):
    common = dict(vocab_size=97, num_labels=1, pad_token_id=PAD)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128, **common)
    elif kind == "qwen2":
        cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=1, max_position_embeddings=128, **common)
    else:
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, **common)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    with torch.no_grad():  # random init leaves the score head near zero: spread the rewards out
        model.score.weight.normal_(0.0, 1.0)
    return model


def _seqs(n: int = 60, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    seqs = [[rng.randrange(1, 97) for _ in range(rng.randint(1, 40))] for _ in range(n)]
    return seqs + [seqs[3], seqs[7], seqs[3]]  # repeats (best-of-N samples often are) score once, land everywhere


@torch.no_grad()
def _padded(model, seqs):
    ids, lengths = pad_batch(seqs, PAD)
    return last_token_rewards(model, ids, lengths)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager", packing.ATTN_IMPLEMENTATION])
def test_grouped_scores_equal_padded_scores(kind, attn):
    model = _model(kind)
    model.set_attn_implementation(attn)
    seqs = _seqs()
    ref = _padded(model, seqs)
    assert ref.std() > 0.1  # rewards differ: a mix-up of rows would show
    for budget in (64, 2048):  # groups split across several forwards, and one forward per length
        ours = scoring.grouped_scores(model, seqs, budget)
        assert ours.shape == ref.shape and ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_last_layer_shortcut_is_taken_and_matches_the_full_forward(kind):
    model = _model(kind)
    layers, _ = scoring._layers(model.base_model)
    assert scoring._supported(layers[-1])
    ids = torch.randint(1, 97, (5, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.base_model(input_ids=ids, use_cache=False)[0][:, -1]
        ours = scoring.last_hidden(model, ids)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=0)
    assert not layers[-1]._forward_pre_hooks  # the stopping hook is gone again


def test_unsupported_layers_run_the_whole_model():
    model = _model("gpt2")
    model.base_model.h[-1].attn.scale_attn_by_inverse_layer_idx = True  # a variant the shortcut does not compute
    assert not scoring._supported(model.base_model.h[-1])
    seqs = _seqs(20)
    torch.testing.assert_close(scoring.grouped_scores(model, seqs), _padded(model, seqs), atol=1e-5, rtol=0)
