"""Tests for the PPO training loop in rmexp.ppo (the primitives are tested in tests/test_ppo_math.py).

A tiny run on xs zoo models (built once into a temporary cache) checks determinism per seed; hand examples check
masking after eos, the missing-eos penalty and batch-size checks; the value model is checked against the RM.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForSequenceClassification

from rmexp import zoo
from rmexp.config import CONF_DIR, ConfigError, validate
from rmexp.ppo import (
    ValueModel,
    _trim,
    apply_missing_eos_penalty,
    check_same_vocab,
    exact_div,
    generate,
    join_sequences,
    ppo_stage,
    prompt_ids,
    response_logprobs,
    rollout,
    score_responses,
    truncate_after_eos,
)
from rmexp.rm import RewardModel
from rmexp.world.core import World
from rmexp.world.tokenizer import build_tokenizer

POLICY = "toy_llama_xs_sft"
TINY_PPO = ["preset=tiny", "downstream.ppo.enabled=true", "downstream.ppo.steps=2",
            "downstream.ppo.rollout_batch=4", "downstream.ppo.minibatch=2", "downstream.ppo.eval_prompts_per_domain=1",
            "downstream.ppo.eval_every=1"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="module")
def world() -> World:
    return World(0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ppo_cache")


@pytest.fixture(scope="module")
def policy_dir(world, cache) -> Path:
    torch.set_num_threads(1)
    path, _ = zoo.policy_path(POLICY, world, cache, progress=False)  # builds the xs base and its SFT (a few s)
    return path


@pytest.fixture(scope="module")
def rm(policy_dir) -> RewardModel:
    """An (untrained) RM on the policy's base: a seeded score head, and a non-zero normalisation offset."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(policy_dir), num_labels=1).eval()
    _, tok = zoo.load_causal_lm(policy_dir)
    model.config.pad_token_id = tok.pad_token_id
    return RewardModel(model, tok, offset=0.25, max_length=64)


# ---------------------------------------------------------------------------------------------------- hand examples
def test_response_is_masked_after_the_first_eos():
    eos, pad = 2, 0
    response = torch.tensor([[5, 6, eos, 7, eos],
                             [eos, 5, 5, 5, 5],
                             [5, 5, 5, 5, 5],
                             [5, 5, 5, 5, eos]])
    tokens, mask, has_eos = truncate_after_eos(response, eos, pad)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert tokens.tolist() == [[5, 6, eos, pad, pad], [eos, pad, pad, pad, pad], [5, 5, 5, 5, 5], [5, 5, 5, 5, eos]]
    assert has_eos.tolist() == [True, True, False, True]


def test_completions_without_eos_get_the_penalty():
    scores = torch.tensor([1.0, 0.5, -0.2])
    out = apply_missing_eos_penalty(scores, torch.tensor([True, False, False]), 1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, -0.5, -1.2]))

    class StubRM:
        def score(self, prompts, responses, batch_tokens=4096):
            return np.array([0.3, -0.4])

    reward, proxy = score_responses(StubRM(), ["p", "q"], ["a", "b"], torch.tensor([False, True]), 0.75)
    torch.testing.assert_close(proxy, torch.tensor([0.3, -0.4]))
    torch.testing.assert_close(reward, torch.tensor([0.3 - 0.75, -0.4]))


def test_batch_sizes_that_do_not_divide_fail_before_any_work(tmp_path):
    cfg = _compose(TINY_PPO + ["downstream.ppo.rollout_batch=10", "downstream.ppo.minibatch=4"])
    with pytest.raises(ConfigError, match="downstream.ppo.minibatch"):
        validate(cfg)
    # ppo_stage checks too, before it touches world, RM or cache (None here would fail differently).
    with pytest.raises(ValueError) as e:
        ppo_stage(cfg, None, None, tmp_path / "no_cache", tmp_path, False)
    msg = str(e.value)
    assert "rollout_batch" in msg and "minibatch" in msg and "10" in msg and "4" in msg
    assert not (tmp_path / "no_cache").exists()
    with pytest.raises(ValueError, match="10 is not exactly divisible by 4"):
        exact_div(10, 4, "downstream.ppo.rollout_batch / downstream.ppo.minibatch")


def test_vocabulary_mismatch_is_refused(policy_dir):
    _, tok = zoo.load_causal_lm(policy_dir)
    check_same_vocab(tok, tok)
    with pytest.raises(ValueError, match="does not share the policy's vocabulary"):
        check_same_vocab(tok, build_tokenizer(["alpha", "beta"]))


def test_a_scorer_without_a_value_init_is_refused_before_training(world, rm, cache, tmp_path, monkeypatch):
    """PPO's value model comes from `rm.value_init()`; a kind that offers none (e.g. a judge) gets one clear error
    before the policy is even loaded."""
    from rmexp import zoo as zoo_module

    class NoValueScorer:
        kind, tok, score, describe = "judge", rm.tok, rm.score, rm.describe

        def value_init(self):
            return None

    monkeypatch.setattr(zoo_module, "policy_path", lambda *a, **k: pytest.fail("PPO started work"))
    cfg = _compose(TINY_PPO + [f"cache_dir={cache}"])
    with pytest.raises(ValueError) as e:
        ppo_stage(cfg, world, NoValueScorer(), cache, tmp_path, False)
    assert "rm=judge offers no value-model initialisation" in str(e.value) and len(str(e.value).splitlines()) == 1
    init = rm.value_init()  # the classifier offers itself, with its normalisation offset
    assert init.model is rm.model and init.offset == 0.25


# ---------------------------------------------------------------------------------------------------- with models
def _hand_batch(tok, world):
    prompts = [world.prompts(d, "heldout")[0].text for d in ("Factuality", "Math", "Safety")]
    responses = ["the color of it is red .", "7", "sorry , i will not help with that ."]
    queries = [prompt_ids(tok, p) for p in prompts]
    rows = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
    width = max(map(len, rows)) + 2
    raw = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])  # junk eos after the first
    response, mask, has_eos = truncate_after_eos(raw, tok.eos_token_id, tok.pad_token_id)
    ids, attn, q_len = join_sequences(queries, response, mask, tok.pad_token_id)
    return prompts, responses, ids, attn, q_len, response, mask


def test_value_model_from_the_rm_gives_the_rm_score_at_the_last_response_token(world, rm):
    prompts, responses, ids, attn, q_len, response, mask = _hand_batch(rm.tok, world)
    vm = ValueModel(rm.model, rm.offset).eval()
    with torch.no_grad():
        per_token = vm.token_values(ids, attn)
        at_last = per_token[torch.arange(len(prompts)), q_len + mask.sum(1) - 1]
        by_state = vm(ids, attn, q_len, response.shape[1])
    expected = torch.from_numpy(rm.score(prompts, responses)).float()
    torch.testing.assert_close(at_last, expected, atol=1e-5, rtol=1e-5)
    # V(s_t) is the head on the state before token t: the same per-token values, shifted by one.
    for i in range(len(prompts)):
        n = int(mask[i].sum())
        torch.testing.assert_close(by_state[i, :n], per_token[i, q_len[i] - 1:q_len[i] - 1 + n])
    # The RM itself is untouched (the value model trains a copy).
    assert all(p1 is not p2 for p1, p2 in zip(vm.parameters(), rm.model.parameters()))


def test_ragged_batch_generation_matches_one_prompt_at_a_time(world, policy_dir):
    model, tok = zoo.load_causal_lm(policy_dir)
    model.eval()
    queries = [prompt_ids(tok, world.prompts(d, "heldout")[0].text) for d in ("Precise IF", "Math", "Focus")]
    assert len({len(q) for q in queries}) > 1  # prompts of different lengths share the buffer
    greedy = dict(max_new_tokens=8, temperature=1e-4, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    batched = generate(model, queries, generator=torch.Generator().manual_seed(0), **greedy)
    for i, q in enumerate(queries):
        alone = generate(model, [q], generator=torch.Generator().manual_seed(0), **greedy)
        n = alone.shape[1]
        assert batched[i, :n].tolist() == alone[0].tolist()


def test_rollout_logprobs_match_the_minibatch_recompute(world, policy_dir):
    model, tok = zoo.load_causal_lm(policy_dir)
    model.eval()
    prompts = [world.prompts(d, "train")[3].text for d in ("Factuality", "Math", "Safety", "Ties")]
    r = rollout(model, model, tok, prompts, 1.0, 12, torch.Generator().manual_seed(1))
    assert r.mask[:, 0].all() and r.response.shape == r.logprob.shape
    assert (r.logprob[r.mask] <= 0).all()
    idx = torch.tensor([2, 0])
    ids, attn, q_len, response, mask, T = _trim(r, idx)
    with torch.no_grad():
        again = response_logprobs(model, ids, attn, q_len, response, 1.0)
    torch.testing.assert_close(torch.where(mask, again, 0.0), torch.where(mask, r.logprob[idx, :T], 0.0),
                               atol=1e-5, rtol=1e-5)


def _tiny_run(cfg, world, rm, cache, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    metrics, history, artifacts = ppo_stage(cfg, world, rm, cache, out, False)
    return {k: v for k, v in metrics.items() if k != "ppo/seconds"}, history, artifacts


def test_tiny_ppo_is_deterministic_per_seed(world, rm, cache, policy_dir, tmp_path):
    cfg = _compose(TINY_PPO + [f"cache_dir={cache}"])
    validate(cfg)
    m1, h1, a1 = _tiny_run(cfg, world, rm, cache, tmp_path / "a")
    m2, h2, _ = _tiny_run(cfg, world, rm, cache, tmp_path / "b")
    assert m1 == m2 and h1 == h2
    m3, h3, _ = _tiny_run(_compose(TINY_PPO + [f"cache_dir={cache}", "downstream.ppo.seed=1"]), world, rm, cache,
                          tmp_path / "c")
    assert m3 != m1 and h3["ppo/train_reward"] != h1["ppo/train_reward"]
    # What the trial logs.
    for key in ("ppo/gold", "ppo/gold_delta", "ppo/proxy", "ppo/kl", "ppo/sft_gold", "ppo/sft_proxy",
                "ppo/Factuality/gold", "ppo/Precise IF/gold", "ppo/Ties/gold"):
        assert np.isfinite(m1[key]), key
    assert m1["ppo/gold_delta"] == pytest.approx(m1["ppo/gold"] - m1["ppo/sft_gold"])
    for key in ("ppo/gold", "ppo/proxy", "ppo/kl", "ppo/train_reward", "ppo/policy_loss", "ppo/value_loss",
                "ppo/clipfrac", "ppo/kl_coef"):
        assert h1[key], key
    assert [s for s, _ in h1["ppo/gold"]] == [0, 1, 2] and [s for s, _ in h1["ppo/train_reward"]] == [1, 2]
    assert h1["ppo/kl"][0][1] == pytest.approx(0.0, abs=1e-6)  # step 0 is the SFT policy itself
    assert {p.name for p in a1} == {"ppo_curve.png", "ppo_samples.jsonl"} and all(p.exists() for p in a1)
    rows = [json.loads(line) for line in (tmp_path / "a" / "ppo_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"prompt", "domain", "response", "gold", "proxy"} <= set(rows[0])


def test_nonfinite_ppo_loss_stops_at_once_naming_the_rates(world, rm, cache, policy_dir, tmp_path):
    from rmexp.guards import NonFiniteError

    cfg = _compose(TINY_PPO + [f"cache_dir={cache}", "downstream.ppo.lr=1e30", "downstream.ppo.value_lr=1e30"])
    validate(cfg)
    with pytest.raises(NonFiniteError, match=r"PPO loss is (nan|inf|-inf) at step 1 of \d+ \(downstream.ppo.lr=1e\+30, "
                                             r"downstream.ppo.value_lr=1e\+30"):
        _tiny_run(cfg, world, rm, cache, tmp_path / "out")
