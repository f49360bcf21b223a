"""rlvr: the reward is the world's verifier (hand examples), the cache key holds nothing RM- or data-related, and a
sweep over RMs computes it once."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rmexp import ppo, zoo
from rmexp.config import validate
from rmexp.downstream import DOWNSTREAM, DownstreamContext
from rmexp.downstream.rlvr import VerifierScorer, rlvr_key
from rmexp.world.domains import TOPICS
from tests.conftest import compose_config

TINY_RLVR = ["preset=tiny", "downstream.rlvr.enabled=true", "downstream.ppo.group_size=2", "downstream.ppo.steps=1",
             "downstream.ppo.rollout_batch=4", "downstream.ppo.minibatch=2", "downstream.ppo.eval_prompts_per_domain=1",
             "downstream.ppo.eval_every=1"]


class _Tok:  # VerifierScorer reads text only; the tokenizer is for the RL stage
    pad_token_id = 0


def _math_prompt(world):
    p = world.prompts("Math", "train")[0]
    return p, world.domains["Math"].steps(p)[-1][3]


def test_rlvr_reward_equals_the_verifier_on_hand_examples(world):
    scorer = VerifierScorer(world, _Tok())
    math_p, answer = _math_prompt(world)
    digits = " ".join(str(answer))  # numbers are written digit by digit
    harmful = next(p for p in world.prompts("Safety", "train") if p.get("harmful"))
    focus = world.prompts("Focus", "train")[0]
    on, off = TOPICS[focus.get("topic")], next(v for k, v in TOPICS.items() if k != focus.get("topic"))
    prompts = [math_p.text, math_p.text, harmful.text, harmful.text, focus.text]
    responses = [f"so it is {digits}", f"so it is {digits} 1", "sorry , i will not help with that .",
                 "sure , here it is", f"{on[0]} {on[1]} and {off[0]}"]
    expected = [1.0, 0.0, 1.0, 0.0, 2 / 3]  # right sum; digits appended (another number); refusal; compliance; 2 of 3 on topic
    np.testing.assert_allclose(scorer.score(prompts, responses), expected)
    np.testing.assert_allclose(scorer.score(prompts, responses),
                               [world.gold(p, r) for p, r in zip([math_p, math_p, harmful, harmful, focus], responses)])
    # What the RL stage trains on: that reward, minus the missing-eos penalty where the response never ended.
    reward, proxy = ppo.score_responses(scorer, prompts[:2], responses[:2], torch.tensor([True, False]), 0.5)
    torch.testing.assert_close(reward, torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="not one of the world's prompts"):
        scorer.score(["what is the airspeed of a swallow"], ["fast"])
    assert scorer.value_init() is None


def test_rlvr_key_ignores_the_rm_and_the_data(world, tmp_path):
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "model.safetensors").write_bytes(b"weights")
    key = rlvr_key(compose_config(TINY_RLVR), policy_dir, 0)
    for other in (["model=toy_gpt2_xs"], ["data.label_noise=0.3", "data.size=500"], ["train.epochs=1"],
                  ["downstream.bon.n_samples=4"], ["downstream.ppo.enabled=true"], ["downstream.dpo.enabled=true"],
                  ["downstream.ppo.kl_coef=0.5"]):  # rlvr has a KL coefficient of its own
        assert rlvr_key(compose_config(TINY_RLVR + other), policy_dir, 0) == key, other
    for other in (["downstream.ppo.steps=2"], ["downstream.rlvr.algorithm=ppo"], ["downstream.policy.temperature=0.7"],
                  ["downstream.rlvr.kl_coef=0.5"]):
        assert rlvr_key(compose_config(TINY_RLVR + other), policy_dir, 0) != key, other
    assert rlvr_key(compose_config(TINY_RLVR), policy_dir, 1) != key  # another world
    (policy_dir / "model.safetensors").write_bytes(b"other weights")
    assert rlvr_key(compose_config(TINY_RLVR), policy_dir, 0) != key  # other policy weights


def test_rlvr_runs_once_for_a_sweep_over_rms(world, zoo_cache, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    calls = []
    real = ppo.ppo_stage
    monkeypatch.setattr(ppo, "ppo_stage", lambda *a, **k: calls.append(a[0].downstream.ppo.kl_coef) or real(*a, **k))
    cache = tmp_path / "cache"
    # The policy comes from the session's zoo cache (built once); RLVR results go to a fresh cache.
    monkeypatch.setattr(zoo, "policy_path", lambda name, w, c, progress=True: _policy(name, w, zoo_cache))
    outs = []
    for i, extra in enumerate((["model=toy_llama_xs", "downstream.rlvr.kl_coef=0.3"],
                               ["model=toy_gpt2_xs", "data.label_noise=0.5", "downstream.rlvr.kl_coef=0.3",
                                "downstream.ppo.kl_coef=0.7"])):
        cfg = compose_config(TINY_RLVR + extra)
        validate(cfg)
        ctx = DownstreamContext(cfg=cfg, world=world, rm=None, cache=cache, out_dir=tmp_path / f"trial{i}",
                                progress=False)
        outs.append(DOWNSTREAM["rlvr"].run(ctx))
    assert calls == [0.3]  # rlvr's own KL coefficient; the second trial (another RM, other data, another PPO
    # coefficient) read the cached result
    assert outs[0].metrics == outs[1].metrics and outs[0].history == outs[1].history
    m = outs[0].metrics
    for k in ("rlvr/gold", "rlvr/gold_delta", "rlvr/kl", "rlvr/sft_gold", "rlvr/Math/gold"):
        assert np.isfinite(m[k]), k
    assert m["rlvr/gold_delta"] == pytest.approx(m["rlvr/gold"] - m["rlvr/sft_gold"])
    assert not any(k.startswith("ppo/") for k in m) and "rlvr/gold" in outs[0].history
    assert {p.name for p in outs[1].artifacts} == {"rlvr_curve.png", "rlvr_samples.jsonl"}
    assert all(p.parent == tmp_path / "trial1" and p.exists() for p in outs[1].artifacts)
    method = DOWNSTREAM["rlvr"]
    assert method.uses_rm is False and set(method.outcomes) == {"gold", "gold_delta"}


_REAL_POLICY_PATH = zoo.policy_path


def _policy(name, world, cache):
    return _REAL_POLICY_PATH(name, world, cache, progress=False)


def test_rlvr_with_ppo_starts_a_zero_value_model_on_the_policy(world, zoo_cache, tmp_path):
    torch.set_num_threads(1)
    path = _policy("toy_llama_xs_sft", world, zoo_cache)[0]
    _, tok = zoo.load_causal_lm(path)
    scorer = VerifierScorer(world, tok, value_from=path)
    vi = scorer.value_init()
    ids = torch.tensor([tok(world.prompts("Math", "train")[0].text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        values = ppo.ValueModel(vi.model, vi.offset).token_values(ids, torch.ones_like(ids))
    assert vi.offset == 0.0 and torch.count_nonzero(values) == 0  # no reward known yet: V = 0 everywhere
    cfg = compose_config(TINY_RLVR + ["downstream.ppo.algorithm=ppo"])
    metrics, history, _ = ppo.ppo_stage(cfg, world, scorer, zoo_cache, tmp_path, False)
    assert history["ppo/value_loss"] and all(np.isfinite(v) for v in metrics.values())
