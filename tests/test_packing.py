"""Packed forward passes equal the padded ones: rewards, the pairwise loss and its gradients.

The reference is `rmexp.rm.pair_forward` (right-padded rows, transformers' own SDPA masks). Packing that let
chosen attend to rejected, or that kept positions running across sequences, changes every reward after the
first sequence of a row; `test_leaky_packing_is_caught` shows these checks catch exactly that.
"""
from __future__ import annotations

import copy
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2Config, LlamaConfig, Qwen2Config

from rmexp import packing, rm

PAD = 0


def _model(kind: str, seed: int = 0):
    common = dict(vocab_size=97, pad_token_id=PAD, num_labels=1)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, max_position_embeddings=128, **common)
    elif kind == "qwen2":  # grouped-query attention, as Qwen2-0.5B (14 heads, 2 kv heads)
        cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128, **common)
    else:  # absolute position embeddings: positions must restart per sequence
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, **common)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
    model.config.pad_token_id = PAD
    return model.eval()


def _pairs(n: int = 5, seed: int = 0, lo: int = 3, hi: int = 20):
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.randint(1, 97, (int(torch.randint(lo, hi + 1, (1,), generator=g)),), generator=g).tolist()  # noqa: E731
    return [(rand(), rand()) for _ in range(n)]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("row_len", [24, 64])  # several rows / everything in few rows
def test_packed_rewards_loss_and_grads_equal_padded(kind, row_len):
    pairs = _pairs()
    ref = _model(kind)
    ref.set_attn_implementation("sdpa")
    ours = copy.deepcopy(ref)
    packing.enable_packed_attention(ours)
    rc0, rr0 = rm.pair_forward(ref, pairs, PAD)
    loss0 = rm.pairwise_loss(rc0, rr0, margin=0.1, center_coef=0.01)
    loss0.backward()
    packed = packing.pack_pairs(pairs, PAD, row_len)
    assert packed.input_ids.shape[1] == row_len and packed.real_tokens == sum(len(c) + len(r) for c, r in pairs)
    rc1, rr1 = packing.packed_pair_rewards(ours, packed)
    loss1 = rm.pairwise_loss(rc1, rr1, margin=0.1, center_coef=0.01)
    loss1.backward()
    torch.testing.assert_close(rc1, rc0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rr1, rr0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss1, loss0, atol=1e-6, rtol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
        if a.grad is None:
            assert b.grad is None or not b.grad.any(), name
            continue
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    # each reward also equals the model run on that sequence alone (no batching at all)
    with torch.no_grad():
        c, r = pairs[3]
        alone = rm.last_token_rewards(ref, torch.tensor([c]), torch.tensor([len(c)]))
    torch.testing.assert_close(rc1[3].detach(), alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_packed_scores_equal_one_at_a_time(kind):
    model = _model(kind)
    seqs = [s for pair in _pairs(9, seed=3) for s in pair]
    with torch.no_grad():
        alone = torch.cat([rm.last_token_rewards(model, torch.tensor([s]), torch.tensor([len(s)])) for s in seqs])
    packing.enable_packed_attention(model)
    for budget in (40, 64, 1000):  # one sequence a row .. everything in one batch
        for fixed in (False, True):  # empty trailing segments (one graph for a compiled model) change nothing
            torch.testing.assert_close(packing.packed_scores(model, seqs, PAD, budget, fixed_segments=fixed), alone,
                                       atol=1e-5, rtol=1e-5)


def test_leaky_packing_is_caught():
    """Control: one causal mask over the whole row (chosen sees rejected) and running positions disagree."""
    pairs = _pairs(2, hi=10)
    model = _model("gpt2")
    packing.enable_packed_attention(model)
    packed = packing.pack_pairs(pairs, PAD, 64)
    assert packed.input_ids.shape[0] == 1
    with torch.no_grad():
        good = packing.packed_rewards(model, packed)
        out = model.base_model(input_ids=packed.input_ids, use_cache=False)[0].reshape(-1, 32)
        leaky = model.score(out[packed.last_index]).squeeze(-1)
    torch.testing.assert_close(good[0], leaky[0], atol=1e-5, rtol=1e-5)  # the first sequence sees no other
    assert (good[1:] - leaky[1:]).abs().min() > 1e-3


def test_pack_layout_by_hand():
    seqs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    p = packing.pack_sequences(seqs, rows=2, row_len=5, pad_id=0, max_segments=6)
    # first fit: [5 6 7 8 9] in row 0, [10 11 12 13 pad] in row 1
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 0]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert p.segment.tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 2, -1]]
    assert p.last_index.tolist() == [2, 4, 8]
    assert p.cu_seqlens.tolist() == [0, 3, 5, 9, 10, 10, 10]  # pad tail is a segment; then empty ones
    m = packing.block_causal_mask(p.segment)[:, 0]
    assert m[0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert m[1, 4].int().tolist() == [0, 0, 0, 0, 1]  # pad sees only itself
    with pytest.raises(ValueError, match="do not fit"):
        packing.pack_sequences(seqs, rows=1, row_len=5, pad_id=0)


def test_budget_batches_fill_and_cover():
    lengths = [(3, 4), (5, 5), (2, 2), (6, 1), (4, 4)]
    # By hand, 2 rows x 8 tokens, no lookahead: pair 0 puts 3+4 in row 0; pair 1's 5 goes to row 1 and its
    # second 5 fits nowhere: close [0]. Next: 5|5, then 2 and 2 (rows 3 -> 1 each); 6 fits nowhere: close
    # [1, 2]. Last: 6+1 in row 0, 4+4 in row 1: [3, 4].
    assert packing.budget_batches(lengths, list(range(5)), rows=2, row_len=8, lookahead=0) == [[0], [1, 2], [3, 4]]
    # With lookahead, pair 1 is deferred and pair 2 fills the first budget: [0, 2]; then 1 (5|5, nothing else
    # fits: 6 and 4+4 need more than the 3|3 left); then [3, 4].
    batches = packing.budget_batches(lengths, list(range(5)), rows=2, row_len=8, lookahead=4)
    assert batches == [[0, 2], [1], [3, 4]]
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        assert packing.first_fit([n for i in b for n in lengths[i]], 2, 8) is not None
    with pytest.raises(ValueError, match="does not fit"):
        packing.budget_batches([(9, 1)], [0], rows=1, row_len=8)


def test_fused_and_plain_adamw_agree_to_ulps():
    """Same arithmetic: after 30 steps of RM training the parameters differ by float rounding only."""
    pairs = _pairs(8, seed=1)
    a = _model("llama")
    a.train()
    b = copy.deepcopy(a)
    oa = rm.make_optimizer(a, 2e-3, fused=False)
    ob = rm.make_optimizer(b, 2e-3, fused=True)
    assert ob.defaults["fused"] and not oa.defaults["fused"]
    for step in range(30):
        batch = pairs[step % 2 * 4:][:4]
        rm.train_step(a, oa, batch, PAD)
        rm.train_step(b, ob, batch, PAD)
    moved = max((p - q).abs().max().item() for p, q in zip(a.parameters(), _model("llama").parameters()))
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert moved > 1e-2  # training really moved the weights
    assert diff < 1e-5, diff


@pytest.mark.skipif(not torch.cuda.is_available() or packing.varlen_attn is None, reason="needs CUDA and varlen_attn")
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_varlen_on_cuda_equals_padded(kind):
    pairs = _pairs(6, hi=40)
    ref = _model(kind).cuda()
    ref.set_attn_implementation("sdpa")
    ours = copy.deepcopy(ref)
    packing.enable_packed_attention(ours)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        rc0, rr0 = rm.pair_forward(ref, pairs, PAD)
        packed = packing.pack_pairs(pairs, PAD, 512, rows=1, max_segments=32, max_seqlen=64).to("cuda")  # 12 seqs <= 40
        assert packing.use_varlen(ours, packed.input_ids.device)
        rc1, rr1 = packing.packed_pair_rewards(ours, packed)
    rm.pairwise_loss(rc0, rr0).backward()
    rm.pairwise_loss(rc1, rr1).backward()
    torch.testing.assert_close(rc1, rc0, atol=3e-2, rtol=3e-2)  # bf16 kernels differ in rounding
    torch.testing.assert_close(rr1, rr0, atol=3e-2, rtol=3e-2)
    for a, b in zip(ref.parameters(), ours.parameters()):
        if a.grad is not None:
            assert (b.grad - a.grad).norm() <= 5e-2 * a.grad.norm() + 1e-4


def _segment_attention(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), **gqa):
    """A reference varlen kernel: causal SDPA per segment; without `enable_gqa` it needs as many kv heads as
    query heads (as torch 2.11's varlen_attn, whose signature has no enable_gqa)."""
    assert window_size == (-1, 0)
    assert gqa.get("enable_gqa", False) or k.shape[1] == q.shape[1]
    out = torch.zeros_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        seg = [t[a:b].transpose(0, 1) for t in (q, k, v)]  # [H, len, D]
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(
            *seg, is_causal=True, scale=scale, enable_gqa=gqa.get("enable_gqa", False)).transpose(0, 1)
    return out


@pytest.mark.parametrize("has_gqa", [False, True])
def test_varlen_call_shares_kv_heads_like_repeat_kv_with_or_without_the_kernels_gqa_flag(has_gqa):
    """Query head h must read kv head h // groups whether the kernel takes `enable_gqa` or not; expected values:
    each segment on its own through SDPA with the kv heads expanded as transformers' repeat_kv does."""
    g = torch.Generator().manual_seed(0)
    T, H, H_kv, D = 11, 4, 2, 8
    q, k, v = (torch.randn(T, h, D, generator=g) for h in (H, H_kv, H_kv))
    cu = torch.tensor([0, 4, 11], dtype=torch.int32)
    out = packing.causal_varlen(q, k, v, cu, 7, 0.3, kernel=_segment_attention, has_gqa=has_gqa)
    for a, b in ((0, 4), (4, 11)):
        kk = k[a:b, :, None].expand(b - a, H_kv, H // H_kv, D).reshape(b - a, H, D)  # repeat_kv, written out
        vv = v[a:b, :, None].expand(b - a, H_kv, H // H_kv, D).reshape(b - a, H, D)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), kk.transpose(0, 1), vv.transpose(0, 1), is_causal=True, scale=0.3)
        torch.testing.assert_close(out[a:b], ref.transpose(0, 1))


def test_varlen_request_off_cuda_is_an_error_not_a_silent_full_attention():
    """cu_seqlens come with a placeholder mask: if varlen cannot run, attention must refuse, not attend to all."""
    model = _model("llama")
    packing.enable_packed_attention(model)
    packed = packing.pack_pairs(_pairs(2), PAD, 64)
    with pytest.raises(RuntimeError, match="varlen attention cannot run here"):
        model.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                         attention_mask=packed.segment[:, None, None, :1] >= 0, use_cache=False,
                         cu_seq_lens_q=packed.cu_seqlens, cu_seq_lens_k=packed.cu_seqlens,
                         max_length_q=packed.max_seqlen, max_length_k=packed.max_seqlen)
    assert not packing.use_varlen(model, torch.device("cpu"))


def _train_packed(model, pairs, steps: int, compiled: bool, row_len: int = 24) -> list[float]:
    """`steps` packed training steps (train.packing=true), through the compiled base when `compiled`."""
    model.train()
    packing.enable_packed_attention(model)
    opt = rm.make_optimizer(model, 2e-3)
    layout = rm.PackLayout.for_pairs(pairs, 4, row_len, flat=False)
    base = rm.compile_base(model) if compiled else None
    losses = []
    for step in range(steps):
        batch = layout.batches(pairs, random.Random(step))[0]
        loss, _, _ = rm.train_step(model, opt, [pairs[i] for i in batch], PAD, layout=layout, compiled_base=base)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["qwen2", "gpt2"])
def test_compiled_packed_training_equals_eager_and_repeats_exactly(kind):
    """train.compile=true: the compiled base trains like the eager one (float rounding apart: fused kernels) and,
    compiled again from the same start, gives the same weights to the last bit (same config, same numbers)."""
    from torch._dynamo.utils import counters

    pairs = _pairs(12, seed=2, hi=11)
    eager, comp, again = _model(kind), _model(kind), _model(kind)
    l_eager = _train_packed(eager, pairs, 8, compiled=False)
    counters.clear()
    l_comp = _train_packed(comp, pairs, 8, compiled=True)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # compiled, in one graph
    l_again = _train_packed(again, pairs, 8, compiled=True)
    torch.testing.assert_close(torch.tensor(l_comp), torch.tensor(l_eager), atol=1e-5, rtol=1e-5)
    moved = max((p - q).abs().max().item() for p, q in zip(eager.parameters(), _model(kind).parameters()))
    assert moved > 1e-3  # the steps trained
    for (name, a), b in zip(eager.named_parameters(), comp.parameters()):
        # Adam turns a rounding-sized gradient into a step of up to lr (2e-3): 1e-4 is 5% of one step
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
    assert l_again == l_comp
    assert all(torch.equal(a, b) for a, b in zip(comp.parameters(), again.parameters()))


def test_a_compiled_base_needs_packed_steps():
    model = _model("llama")
    with pytest.raises(ValueError, match="compiled base needs packed steps"):
        rm.train_step(model, rm.make_optimizer(model, 1e-3), _pairs(2), PAD, compiled_base=rm.compile_base(model))


def test_each_rm_compiles_afresh_so_a_process_never_falls_back_to_eager():
    """A sweep's trial process trains many RMs with budgets of other shapes: past dynamo's recompile limit it would
    run eager in silence. compile_base starts each RM afresh (here with a limit of 1: two shapes would pass it)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    pairs = _pairs(12, seed=3, hi=11)
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=False):
        for row_len in (24, 32):  # another budget shape: without the fresh start, the second RM would train eager
            counters.clear()
            _train_packed(_model("llama"), pairs, 2, compiled=True, row_len=row_len)
            assert counters["stats"]["unique_graphs"] == 1, row_len
