"""The classifier RM on a real architecture (the offline Qwen2 fixture, pad == eos): per-row margins from a mapped
column reach the loss in both training paths, LoRA saves the trained head with the adapter and scores survive save
and load, the backbone options are part of the cache key, and the reward is read at the last real token."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rmexp import data
from rmexp.fixtures import write_fixtures
from rmexp.rm import classifier
from rmexp.rm.base import RMContext
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("fixtures"), seed=0)


@pytest.fixture(scope="module")
def mapped_file(fx, tmp_path_factory):
    """The fixture preferences under other column names, with a distinct margin per row."""
    rows = [json.loads(line) for line in fx["preferences"].read_text().splitlines()][:48]
    path = tmp_path_factory.mktemp("mapped") / "mapped.jsonl"
    path.write_text("".join(json.dumps({"instruction": r["prompt"], "good": r["chosen"], "bad": r["rejected"],
                                        "gap": round(0.05 * i, 2)}) + "\n" for i, r in enumerate(rows)))
    return path


def _cfg(fx, data_path, *extra):
    return compose_config(["preset=tiny", "model=hf", f"model.path={fx['model']}", "data=files",
                           f"data.path={data_path}", "train.epochs=1", "train.batch_size=8", *extra])


def test_pairwise_loss_with_per_row_margins_matches_hand_computation():
    r_c, r_r, m = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.5, -1.0, 0.0])
    # r_c - r_r - m = [0.5, 0.5, 0]: -logsigmoid(0.5) = log(1 + e^-0.5) = 0.474076984180107, -logsigmoid(0) = log 2.
    expected = (2 * 0.474076984180107 + 0.693147180559945) / 3
    assert classifier.pairwise_loss(r_c, r_r, m).item() == pytest.approx(expected, abs=1e-6)
    assert classifier.pairwise_loss(r_c, r_r, 0.5).item() == pytest.approx(
        (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0)) + math.log1p(math.exp(0.5))) / 3, abs=1e-6)


@pytest.mark.parametrize("packing", [False, True], ids=["bucketed", "packed"])
def test_mapped_columns_and_margins_reach_the_trainer(fx, mapped_file, tmp_path, monkeypatch, packing):
    cfg = _cfg(fx, mapped_file, "data.columns={prompt: instruction, chosen: good, rejected: bad}",
               "data.margin_column=gap", "train.margin=0.25", f"train.packing={str(packing).lower()}")
    rows = data.preference_rows(cfg, None)
    assert [r["margin"] for r in rows] == [round(0.05 * i, 2) for i in range(48)]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(fx["model"]))
    pairs, _, kept = classifier.encode_pairs(tok, rows, cfg.train.max_length, cfg.train.overlong)
    want = {(tuple(c), tuple(r)): 0.25 + rows[i]["margin"] for (c, r), i in zip(pairs, kept)}
    steps = []
    real = classifier.train_step

    def spy(model, opt, batch, pad_id, margin=0.0, *args, **kwargs):
        loss, rc, rr = real(model, opt, batch, pad_id, margin, *args, **kwargs)
        steps.append((batch, margin, loss, rc, rr))
        return loss, rc, rr
    monkeypatch.setattr(classifier, "train_step", spy)
    classifier.train_reward_model(fx["model"], rows, cfg, tmp_path, progress=False)
    assert steps and sum(len(b) for b, *_ in steps) == len(classifier.split_pairs(rows, 0.1, cfg.data.seed)[0])
    for batch, margin, loss, rc, rr in steps:
        assert margin.tolist() == pytest.approx([want[(tuple(c), tuple(r))] for c, r in batch])
        by_hand = sum(math.log1p(math.exp(-(c - r - m))) for c, r, m in zip(rc.tolist(), rr.tolist(),
                                                                             margin.tolist())) / len(batch)
        assert loss.item() == pytest.approx(by_hand, abs=1e-5)


def test_lora_saves_the_trained_head_with_the_adapter_and_scores_survive_save_and_load(fx, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    cfg = _cfg(fx, fx["preferences"], "data.size=64", "train.lora_r=4", "train.lora_alpha=8")
    rows = data.preference_rows(cfg, None)
    rm = classifier.train_reward_model(fx["model"], rows, cfg, tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert "model.safetensors" not in files  # the adapter, not a full copy of the base
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(".score." in k for k in keys) and any("lora_A" in k for k in keys)
    texts = [r["prompt"] for r in rows[:8]]
    before = rm.score(texts, [r["chosen"] for r in rows[:8]])
    loaded = classifier.load_reward_model(tmp_path)
    after = loaded.score(texts, [r["chosen"] for r in rows[:8]])
    assert before.std() > 0
    assert after == pytest.approx(before, abs=1e-6)
    # The head was trained (it moved from its seeded initial value) and the loaded one is the trained one.
    torch.manual_seed(cfg.train.seed)
    initial = AutoModelForSequenceClassification.from_pretrained(str(fx["model"]), num_labels=1).score.weight
    torch.testing.assert_close(loaded.model.score.weight, rm.model.score.weight)
    assert not torch.allclose(loaded.model.score.weight, initial)


def test_full_fine_tuning_with_checkpointing_and_eager_attention_survives_save_and_load(fx, tmp_path):
    cfg = _cfg(fx, fx["preferences"], "data.size=48", "train.gradient_checkpointing=true",
               "model.attn_implementation=eager", "model.dtype=float32")
    rows = data.preference_rows(cfg, None)
    rm = classifier.train_reward_model(fx["model"], rows, cfg, tmp_path, progress=False)
    assert (tmp_path / "model.safetensors").exists()
    loaded = classifier.load_reward_model(tmp_path)
    assert loaded.model.config._attn_implementation == "eager"
    texts, answers = [r["prompt"] for r in rows[:6]], [r["rejected"] for r in rows[:6]]
    assert loaded.score(texts, answers) == pytest.approx(rm.score(texts, answers), abs=1e-6)


@pytest.mark.parametrize("override", ["model.dtype=bfloat16", "model.attn_implementation=eager", "train.lora_r=8",
                                      "train.gradient_checkpointing=true", "train.lora_targets=[q_proj]"])
def test_backbone_options_are_part_of_the_rm_cache_key(fx, override):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]

    def key(*extra):
        cfg = _cfg(fx, fx["preferences"], *extra)
        return classifier.rm_cache_key(RMContext(cfg=cfg, world=None, base=fx["model"], prefs=rows, cache=Path("."),
                                                 progress=False))
    assert key() == key() != key(override)
    marked = [{**rows[0], "margin": 1.0}]
    assert classifier.rm_cache_key(RMContext(cfg=_cfg(fx, fx["preferences"]), world=None, base=fx["model"],
                                             prefs=marked, cache=Path("."), progress=False)) != key()


# ------------------------------------------------------------------------------------------- pad == eos
@pytest.fixture(scope="module")
def trained(fx, tmp_path_factory):
    cfg = _cfg(fx, fx["preferences"], "data.size=64")
    return classifier.train_reward_model(fx["model"], data.preference_rows(cfg, None), cfg,
                                         tmp_path_factory.mktemp("rm"), progress=False)


def _by_hand(rm, text: str) -> float:
    """The score head on the hidden state of the text's last token, the text alone (no padding)."""
    ids = torch.tensor([rm.tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = rm.model.base_model(input_ids=ids)[0][0, -1]
        return rm.model.score(hidden).item() - rm.offset


def test_pad_equals_eos_completions_ending_in_eos_score_apart_and_at_their_last_token(trained):
    tok = trained.tok
    assert tok.pad_token_id == tok.eos_token_id
    texts = [f"the answer is four{tok.eos_token}", f"the answer is five, surely not four{tok.eos_token}"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ids[0][-1] == ids[1][-1] == tok.eos_token_id and len(ids[0]) != len(ids[1])
    padded = trained.score_texts(texts)                                    # one batch: the short row padded with eos
    alone = [trained.score_texts([t])[0] for t in texts]                   # one row each: no padding
    assert padded[0] != pytest.approx(padded[1], abs=1e-4)
    assert padded == pytest.approx(alone, abs=1e-5)
    assert padded == pytest.approx([_by_hand(trained, t) for t in texts], abs=1e-5)


def test_training_forward_reads_rewards_at_the_last_real_token(trained):
    tok = trained.tok
    short = tok("a short one" + tok.eos_token, add_special_tokens=False)["input_ids"]
    long = tok("a much longer completion than that" + tok.eos_token, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        rc, rr = classifier.pair_forward(trained.model, [(short, long), (long, short)], tok.pad_token_id)
    want = [_by_hand(trained, tok.decode(x)) + trained.offset for x in (short, long)]
    assert rc.tolist() == pytest.approx([want[0], want[1]], abs=1e-5)
    assert rr.tolist() == pytest.approx([want[1], want[0]], abs=1e-5)


def test_a_tokenizer_without_pad_trains_and_pads_with_eos(fx, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    base = tmp_path / "nopad"
    shutil.copytree(fx["model"], base)
    tok = AutoTokenizer.from_pretrained(str(base))
    tok.pad_token = None
    tok.save_pretrained(str(base))
    assert AutoTokenizer.from_pretrained(str(base)).pad_token is None
    cfg = _cfg(fx, fx["preferences"], "data.size=32", f"model.path={base}")
    rm = classifier.train_reward_model(base, data.preference_rows(cfg, None), cfg, tmp_path / "rm", progress=False)
    assert rm.tok.pad_token_id == rm.tok.eos_token_id
    texts = ["q\n\nfour" + rm.tok.eos_token, "q\n\nfive or six" + rm.tok.eos_token]
    assert rm.score_texts(texts) == pytest.approx([rm.score_texts([t])[0] for t in texts], abs=1e-5)
