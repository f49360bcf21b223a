"""KV-cache sampling (rmexp.sampling) against the cache-free reference (rmexp.ppo.generate)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from rmexp import sampling
from rmexp.ppo import generate as reference_generate

PAD, EOS = 0, 1


def _lm(kind: str):
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          pad_token_id=PAD, eos_token_id=EOS)
    else:
        cfg = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=PAD,
                         eos_token_id=EOS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # sharpen the random model so greedy has clear winners and eos happens
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


QUERIES = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]  # ragged: left padding is exercised


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("temperature", [1e-4, 1.0])
def test_kv_cache_samples_equal_the_cache_free_reference(kind, temperature):
    model = _lm(kind)
    args = dict(max_new_tokens=12, temperature=temperature, eos_id=EOS, pad_id=PAD)
    ours = sampling.generate(model, QUERIES, generator=torch.Generator().manual_seed(3), **args)
    ref = reference_generate(model, QUERIES, generator=torch.Generator().manual_seed(3), **args)
    assert ours.tolist() == ref.tolist()
    # and each row equals that prompt generated alone (greedy: no shared random stream)
    if temperature < 1e-3:
        for i, q in enumerate(QUERIES):
            alone = sampling.generate(model, [q], generator=torch.Generator().manual_seed(0), **args)
            assert ours[i, :alone.shape[1]].tolist() == alone[0].tolist()


def test_pad_after_eos_and_early_stop():
    model = _lm("llama")
    out = sampling.generate(model, QUERIES * 4, 20, 1.0, EOS, PAD, torch.Generator().manual_seed(0))
    for row in out.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
    assert out.shape[1] <= 20


class _Tok:
    eos_token_id, pad_token_id = EOS, PAD

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(str(t) for t in row if t not in (EOS, PAD)) for row in ids.tolist()]


def test_sample_texts_same_seed_same_samples():
    model = _lm("gpt2")
    a = sampling.sample_texts(model, _Tok(), QUERIES, n=4, temperature=1.0, max_new_tokens=6, seed=7)
    b = sampling.sample_texts(model, _Tok(), QUERIES, n=4, temperature=1.0, max_new_tokens=6, seed=7)
    c = sampling.sample_texts(model, _Tok(), QUERIES, n=4, temperature=1.0, max_new_tokens=6, seed=8)
    assert a == b and a != c
    assert [len(x) for x in a] == [4, 4, 4]
    assert len({s for row in a for s in row}) > 3  # samples differ from each other


# ---------------------------------------------------------------------------------------------------
# The fast paths (distinct-prompt prefill, cache buffers, dropping ended rows, vectorised draws) must draw
# exactly what the sampler drew before them (SAMPLER_VERSION 2: cached BoN samples and the pinned trial
# metrics depend on it). This is that sampler, frozen.
@torch.no_grad()
def _generate_v2(model, queries, max_new_tokens, temperature, eos_id, pad_id, generator):
    B, width = len(queries), max(map(len, queries))
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    for i, q in enumerate(queries):
        ids[i, width - len(q):] = torch.tensor(q, dtype=torch.long)
        attn[i, width - len(q):] = 1
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    kwarg = sampling._cache_kwarg(model)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    cache, logits = getattr(out, kwarg), out.logits[:, -1]
    next_pos = pos[:, -1:] + 1
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    steps = 0
    for t in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        done |= nxt == eos_id
        steps = t + 1
        if bool(done.all()) or t + 1 == max_new_tokens:
            break
        attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype)], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos, use_cache=True,
                    **{kwarg: cache})
        cache, logits = getattr(out, kwarg), out.logits[:, -1]
        next_pos = next_pos + 1
    return tokens[:, :steps]


def _qwen2():
    from transformers import Qwen2Config

    cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(4.0)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fast_sampler_draws_what_the_v2_sampler_drew(kind, temperature):
    model = _qwen2() if kind == "qwen2" else _lm(kind)
    g = torch.Generator().manual_seed(11)
    prompts = [torch.randint(2, 50, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (9,), generator=g)]
    rows = [q for q in prompts for _ in range(7)]  # best-of-N layout: each prompt n times in a row
    rows[5], rows[40] = rows[40], rows[5]  # and repeats that are not neighbours
    for seed in range(3):
        ref = _generate_v2(model, rows, 20, temperature, EOS, PAD, torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)
        ours = sampling.generate(model, rows, 20, temperature, EOS, PAD, gen)
        assert ours.tolist() == ref.tolist()
        # the generator ends where multinomial would have left it (the next batch draws the same)
        gen_ref = torch.Generator().manual_seed(seed)
        _generate_v2(model, rows, 20, temperature, EOS, PAD, gen_ref)
        assert torch.equal(gen.get_state(), gen_ref.get_state())
    ended = (ref == EOS).any(1)
    assert 0 < int(ended.sum()) < len(rows)  # rows ended at different steps: the ended-row path ran


def test_sampler_stops_when_every_row_has_ended():
    model = _lm("llama")
    bias = torch.zeros(50)
    bias[EOS] = 3.0  # eos likely at every step: rows end at different steps, all long before max_new_tokens
    model.lm_head.bias = torch.nn.Parameter(bias)
    rows = [[5, 6]] * 30 + [[7, 8, 9]] * 10
    ref = _generate_v2(model, rows, 50, 1.0, EOS, PAD, torch.Generator().manual_seed(2))
    ours = sampling.generate(model, rows, 50, 1.0, EOS, PAD, torch.Generator().manual_seed(2))
    assert ours.tolist() == ref.tolist() and ours.shape[1] < 50  # stopped early, at the same step


def test_exponential_draws_are_torchs_bit_for_bit():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for shape in [(3, 7), (64, 513)]:
        ref = torch.empty(shape).exponential_(1.0, generator=g1)
        ours = sampling.exponential_draws(shape, g2)
        assert ours.dtype == torch.float32 and torch.equal(ours, ref)
    assert torch.equal(g1.get_state(), g2.get_state())
    # and so argmax(p / q) is multinomial's draw
    p = torch.softmax(torch.randn(32, 50, generator=torch.Generator().manual_seed(1)), -1)
    ref = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(9)).squeeze(1)
    ours = (p / sampling.exponential_draws(tuple(p.shape), torch.Generator().manual_seed(9))).argmax(-1)
    assert torch.equal(ours, ref)


def test_nan_logits_are_refused_like_multinomial_does():
    model = _lm("llama")
    with torch.no_grad():
        model.get_output_embeddings().weight[3, 0] = float("nan")
    with pytest.raises(RuntimeError, match="nan"):
        sampling.generate(model, QUERIES, 4, 1.0, EOS, PAD, torch.Generator().manual_seed(0))
