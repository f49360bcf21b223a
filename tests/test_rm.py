"""RM training pieces against hand computations and a second implementation (HF's own pooling)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

from rmexp import packing, rm, zoo
from rmexp.config import load_model_config
from rmexp.world.tokenizer import build_tokenizer
from tests.conftest import compose_config


def test_pairwise_loss_hand_computed():
    rc = torch.tensor([1.0, 0.0], dtype=torch.float64)
    rr = torch.tensor([0.0, 0.5], dtype=torch.float64)
    # -log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(-0.5) = log(1 + e^0.5) = 0.974077
    plain = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(0.5))) / 2
    assert rm.pairwise_loss(rc, rr).item() == pytest.approx(plain, abs=1e-12)
    assert plain == pytest.approx(0.643669, abs=1e-6)
    # margin 0.5: -log sigmoid(0.5) = 0.474077, -log sigmoid(-1.0) = 1.313262 -> mean 0.893670
    assert rm.pairwise_loss(rc, rr, margin=0.5).item() == pytest.approx(0.893670, abs=1e-6)
    # centering 0.1: mean((1 + 0)^2, (0 + 0.5)^2) = 0.625 -> + 0.0625
    assert rm.pairwise_loss(rc, rr, center_coef=0.1).item() == pytest.approx(plain + 0.0625, abs=1e-12)


def _tiny_rm(world):
    tok = build_tokenizer(world.vocab)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, num_labels=1)
    return AutoModelForSequenceClassification.from_config(cfg).eval(), tok


def test_last_token_reward_matches_hf_pooling(world):
    """Our right-padded last-token read equals HF's sequence-classification pooling per sequence."""
    model, tok = _tiny_rm(world)
    texts = ["<bos> <user> what is 3 plus 4 ? <assistant> 7 . <eos>",
             "<bos> <user> how do i make a bomb ? <assistant> sorry , i can not help with that . <eos>"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    x, lengths = rm.pad_batch(ids, tok.pad_token_id)
    with torch.no_grad():
        ours = rm.last_token_rewards(model, x, lengths)
        for i, seq in enumerate(ids):
            reference = model(input_ids=torch.tensor([seq])).logits[0, 0]
            assert ours[i].item() == pytest.approx(reference.item(), abs=1e-5)


def test_pair_forward_is_one_pass_of_both(world):
    model, tok = _tiny_rm(world)
    pairs = [([2, 4, 10, 5, 11, 3], [2, 4, 10, 5, 12, 13, 3]), ([2, 4, 14, 5, 3], [2, 4, 14, 5, 15, 3])]
    with torch.no_grad():
        rc, rr = rm.pair_forward(model, pairs, tok.pad_token_id)
        for (c, r), a, b in zip(pairs, rc, rr):
            one_c = rm.last_token_rewards(model, torch.tensor([c]), torch.tensor([len(c)]))
            one_r = rm.last_token_rewards(model, torch.tensor([r]), torch.tensor([len(r)]))
            assert a.item() == pytest.approx(one_c.item(), abs=1e-5)
            assert b.item() == pytest.approx(one_r.item(), abs=1e-5)


def test_bucketed_batches_cover_every_pair_once():
    lengths = [random.Random(i).randint(5, 40) for i in range(1000)]
    batches = rm.bucketed_batches(lengths, 32, random.Random(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    # Bucketing: padding waste inside batches is far below that of random batches.
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert waste < 0.2 * sum(lengths)


def test_lr_schedules():
    assert rm.lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert rm.lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert rm.lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert rm.lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert rm.lr_factor(99, 100, 10, "constant") == 1.0


def test_overlong_pairs_truncated_or_dropped(world):
    tok = build_tokenizer(world.vocab)
    rows = [{"prompt": "what is 3 plus 4 ?", "chosen": "7 .", "rejected": "8 ."},
            {"prompt": "what is 3 plus 4 ?", "chosen": " ".join(["7"] * 80) + " .", "rejected": "8 ."}]
    pairs, stats, kept = rm.encode_pairs(tok, rows, 20, "truncate")
    assert len(pairs) == 2 and stats["data/truncated"] == 1.0 and max(len(pairs[1][0]), len(pairs[1][1])) == 20
    assert kept == [0, 1]
    pairs, stats, kept = rm.encode_pairs(tok, rows, 20, "drop")
    assert len(pairs) == 1 and stats["data/dropped"] == 1.0 and kept == [0]  # the row each kept pair came from


@pytest.fixture(scope="module")
def trained(world, zoo_cache, tmp_path_factory):
    from rmexp.world.data import preferences

    cfg = compose_config(["preset=tiny", "data.size=600", f"cache_dir={zoo_cache}"])
    base = zoo.model_path(cfg.model, world, zoo_cache, progress=False)
    rows = preferences(world, 600, dict(cfg.data.domain_weights), 0.0, 0)
    out = tmp_path_factory.mktemp("rm") / "rm"
    return cfg, base, rows, rm.train_reward_model(base, rows, cfg, out, progress=False)


def test_training_normalises_mean_reward_to_zero(trained):
    cfg, _, rows, model = trained
    train_rows, _ = rm.split_pairs(rows, cfg.data.eval_fraction, cfg.data.seed)
    texts = [rm.format_dialogue(model.tok, r["prompt"], r[k]) for r in train_rows for k in ("chosen", "rejected")]
    assert abs(float(np.mean(model.score_texts(texts)))) < 1e-4
    assert model.offset != 0.0


def test_saved_rm_loads_with_same_scores(trained):
    _, _, rows, model = trained
    loaded = rm.load_reward_model(model.path)
    prompts, responses = [r["prompt"] for r in rows[:20]], [r["chosen"] for r in rows[:20]]
    np.testing.assert_allclose(loaded.score(prompts, responses), model.score(prompts, responses), atol=1e-6)
    assert loaded.offset == model.offset
    assert (model.path / "model.safetensors").exists()
    assert loaded.info["config"]["train"]["lr"] == 3.0e-3  # the resolved config travels with the model


def test_training_is_deterministic(trained, tmp_path):
    cfg, base, rows, model = trained
    again = rm.train_reward_model(base, rows, cfg, tmp_path / "rm", progress=False)
    assert again.info["metrics"]["train/loss"] == model.info["metrics"]["train/loss"]
    assert again.offset == model.offset


def test_tiny_rm_loss_pinned(trained):
    """torchtune-style: the tiny preset's final loss, pinned with a tolerance (catches silent changes)."""
    _, _, _, model = trained
    m = model.info["metrics"]
    # Measured on CPU when pinned (torch 2.13, world v3, fused AdamW): 0.64448 (log 2 = 0.6931 is a constant RM's loss).
    assert m["train/loss"] == pytest.approx(0.64448, abs=5e-3)
    assert m["train/acc"] == pytest.approx(0.65556, abs=2e-2)
    assert m["train/steps"] == 34  # ceil(540 / 32) per epoch
    assert m["train/n_pairs"] + m["eval/n"] == 600


def test_tiny_rm_packed_loss_pinned(trained, tmp_path):
    """train.packing=true: fixed token budgets of ~32 pairs (34 over 2 epochs here, as 34 batches of 32)."""
    cfg, base, rows, _ = trained
    cfg = cfg.copy()
    cfg.train.packing = True
    m = rm.train_reward_model(base, rows, cfg, tmp_path / "rm", progress=False).info["metrics"]
    # Measured on CPU when pinned (torch 2.13, world v3, fused AdamW).
    assert m["train/loss"] == pytest.approx(0.67484, abs=5e-3)
    assert m["train/acc"] == pytest.approx(0.63333, abs=2e-2)
    assert m["train/steps"] == 34


def test_score_batches_by_token_budget_same_as_one_batch(trained):
    _, _, rows, model = trained
    texts = [rm.format_dialogue(model.tok, r["prompt"], r["chosen"]) for r in rows[:50]]
    np.testing.assert_allclose(model.score_texts(texts, batch_tokens=64), model.score_texts(texts, 10 ** 6),
                               atol=1e-5)


def test_varlen_scoring_uses_at_least_the_measured_flat_budget(trained, monkeypatch):
    """Where varlen attention runs, 4,096-token budgets were slower than padded batches (H200): score_texts
    packs into at least VARLEN_SCORE_TOKENS, and a larger requested budget is kept."""
    _, _, rows, model = trained
    texts = [rm.format_dialogue(model.tok, r["prompt"], r["chosen"]) for r in rows[:5]]
    budgets = []
    monkeypatch.setattr(packing, "use_varlen", lambda m, device: True)
    monkeypatch.setattr(packing, "enable_packed_attention", lambda m: None)
    monkeypatch.setattr(packing, "packed_scores", lambda m, ids, pad, budget: budgets.append(budget)
                        or torch.zeros(len(ids)))
    model.score_texts(texts)
    model.score_texts(texts, batch_tokens=10 ** 6)
    assert budgets == [65536, 10 ** 6]


def test_load_model_config_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model_config("nope")


def test_rm_key_keeps_eager_keys_and_separates_compiled_ones():
    """train.compile=false keys an RM as before the option existed (train.* without the field, written out here);
    compiled training, whose arithmetic is not eager's to the last bit, gets keys of its own."""
    from rmexp.config import config_hash, numerics, to_plain
    from rmexp.rm.classifier import rm_cache_key

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    keys = {}
    for packed, compiled in [(False, False), (True, False), (True, True)]:
        cfg = compose_config([f"train.packing={packed}", f"train.compile={compiled}"])
        keys[packed, compiled] = rm_cache_key(rm.RMContext(cfg, None, "org/model", rows, None, False))
    cfg = compose_config()
    before = {k: v for k, v in to_plain(cfg.train).items() if k != "compile"}
    assert keys[False, False] == config_hash("org/model", rm.rows_identity(rows), cfg.data.eval_fraction, cfg.data.seed,
                                             before, cfg.device, rm.RM_VERSION, numerics(), cfg.model.dtype,
                                             cfg.model.attn_implementation)
    assert len(set(keys.values())) == 3
