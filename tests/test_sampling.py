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


def test_sample_texts_batches_stay_within_the_cache_budget(monkeypatch):
    sizes = []

    def fake_generate(model, rows, max_new_tokens, *args):
        sizes.append(len(rows))
        return torch.full((len(rows), 1), 7)

    monkeypatch.setattr(sampling, "generate", fake_generate)
    model = _lm("gpt2")
    # 3 prompts x 10 samples; the longest prompt (7) + 5 new tokens = 12 positions a row: 100 // 12 = 8 rows a batch
    monkeypatch.setattr(sampling, "BATCH_TOKENS", 100)
    sampling.sample_texts(model, _Tok(), QUERIES, n=10, temperature=1.0, max_new_tokens=5, seed=0)
    assert sizes == [8, 8, 8, 6]
    sizes.clear()  # a generous budget: batch_rows rules
    monkeypatch.setattr(sampling, "BATCH_TOKENS", 10_000)
    sampling.sample_texts(model, _Tok(), QUERIES, n=10, temperature=1.0, max_new_tokens=5, seed=0, batch_rows=16)
    assert sizes == [16, 14]


# ---------------------------------------------------------------------------------------------------
# The fast paths (distinct-prompt prefill, cache buffers, dropping ended rows) must not change a draw. This is the
# plain KV-cache sampler they replace (HF's own cache, every row in the batch to the end, `torch.cat` masks), with
# the same draws as `sampling.draw_tokens` written out again: one float64 uniform per row and step, and the
# first cell whose cumulative probability exceeds u times the row's total.
@torch.no_grad()
def _generate_plain(model, queries, max_new_tokens, temperature, eos_id, pad_id, generator):
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
        u = torch.rand(B, dtype=torch.float64, generator=generator)
        cdf = torch.cumsum(probs.double(), -1)
        nxt = torch.tensor([int((cdf[i] > u[i] * cdf[i, -1]).nonzero()[0]) for i in range(B)])
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
def test_fast_sampler_draws_what_the_plain_sampler_draws(kind, temperature):
    model = _qwen2() if kind == "qwen2" else _lm(kind)
    g = torch.Generator().manual_seed(11)
    prompts = [torch.randint(2, 50, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (9,), generator=g)]
    rows = [q for q in prompts for _ in range(7)]  # best-of-N layout: each prompt n times in a row
    rows[5], rows[40] = rows[40], rows[5]  # and repeats that are not neighbours
    for seed in range(3):
        ref = _generate_plain(model, rows, 20, temperature, EOS, PAD, torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)
        ours = sampling.generate(model, rows, 20, temperature, EOS, PAD, gen)
        assert ours.tolist() == ref.tolist()
        # the generator ends where the plain sampler leaves it (the next batch draws the same)
        gen_ref = torch.Generator().manual_seed(seed)
        _generate_plain(model, rows, 20, temperature, EOS, PAD, gen_ref)
        assert torch.equal(gen.get_state(), gen_ref.get_state())
    ended = (ref == EOS).any(1)
    assert 0 < int(ended.sum()) < len(rows)  # rows ended at different steps: the ended-row path ran


def test_sampler_stops_when_every_row_has_ended():
    model = _lm("llama")
    bias = torch.zeros(50)
    bias[EOS] = 3.0  # eos likely at every step: rows end at different steps, all long before max_new_tokens
    model.lm_head.bias = torch.nn.Parameter(bias)
    rows = [[5, 6]] * 30 + [[7, 8, 9]] * 10
    ref = _generate_plain(model, rows, 50, 1.0, EOS, PAD, torch.Generator().manual_seed(2))
    ours = sampling.generate(model, rows, 50, 1.0, EOS, PAD, torch.Generator().manual_seed(2))
    assert ours.tolist() == ref.tolist() and ours.shape[1] < 50  # stopped early, at the same step


def test_draw_tokens_inverts_the_cumulative_distribution_by_hand():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]])
    # row 0: cumulative 0.2, 0.7, 1.0 -> u 0.1 -> 0, 0.2 -> 1 (0.2 is not above 0.2), 0.69 -> 1, 0.95 -> 2
    for u, want in [(0.1, 0), (0.2, 1), (0.69, 1), (0.95, 2)]:
        assert sampling.draw_tokens(probs[:1], torch.tensor([u], dtype=torch.float64)).tolist() == [want]
    u = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    # zero-probability cells are skipped: u = 0 on row 1 gives cell 2; u = 0.5 on row 2 passes the empty cell 1
    assert sampling.draw_tokens(probs, u).tolist() == [0, 2, 2]
    # an unnormalised row is scaled by its total; u just below 1 stays inside the row
    below_one = torch.tensor([1 - 1e-16], dtype=torch.float64)
    assert sampling.draw_tokens(torch.tensor([[2.0, 2.0]]), below_one).tolist() == [1]


def test_draw_tokens_sample_the_distribution():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.05, 0.0, 0.25, 0.4, 0.3])
    n = 200_000
    draws = sampling.draw_tokens(p.expand(n, -1).contiguous(), torch.rand(n, dtype=torch.float64, generator=g))
    freq = torch.bincount(draws, minlength=5).double() / n
    se = (p.double() * (1 - p.double()) / n).sqrt()
    assert freq[1] == 0  # never the zero-probability cell
    assert bool(((freq - p.double()).abs() <= 5 * se + 1e-12).all()), freq.tolist()


def test_nan_logits_are_refused_like_multinomial_does():
    model = _lm("llama")
    with torch.no_grad():
        model.get_output_embeddings().weight[3, 0] = float("nan")
    with pytest.raises(RuntimeError, match="nan"):
        sampling.generate(model, QUERIES, 4, 1.0, EOS, PAD, torch.Generator().manual_seed(0))
