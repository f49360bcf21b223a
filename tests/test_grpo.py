"""GRPO in rmexp.ppo: the group-relative advantage against hand values, and a tiny GRPO run without a value model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmexp import zoo
from rmexp.config import ConfigError, validate
from rmexp.downstream.rlvr import VerifierScorer
from rmexp.ppo import group_advantages, kl_penalty, ppo_stage
from tests.conftest import compose_config

# rollout_batch 8 = 4 groups a step: with 2 groups the v3 SFT policy drew only uniform groups (all right or all
# wrong: zero advantages), and the test below asserts that the policy moved.
TINY_GRPO = ["preset=tiny", "downstream.ppo.enabled=true", "downstream.ppo.algorithm=grpo",
             "downstream.ppo.group_size=2", "downstream.ppo.steps=2", "downstream.ppo.rollout_batch=8",
             "downstream.ppo.minibatch=2", "downstream.ppo.eval_prompts_per_domain=1", "downstream.ppo.eval_every=1"]


def test_group_advantages_match_hand_values():
    # Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3); group [2, 2, 2, 2]: std 0.
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    out = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), 4)
    torch.testing.assert_close(out, torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]))
    # Pairs [3, 1] and [-1, 0.5]: std of a pair is |x - y| / sqrt(2).
    b, c = 1.0 / (math.sqrt(2) + 1e-4), 0.75 / (1.5 / math.sqrt(2) + 1e-4)
    torch.testing.assert_close(group_advantages(torch.tensor([3.0, 1.0, -1.0, 0.5]), 2),
                               torch.tensor([b, -b, -c, c]))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.tensor([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="5 is not exactly divisible by 2"):
        group_advantages(torch.ones(5), 2)


def test_k3_is_the_grpo_papers_estimator():
    # DeepSeekMath eq. 4: pi_ref/pi - log(pi_ref/pi) - 1, here with pi = 0.5, pi_ref = 0.25 on the sampled token.
    out = kl_penalty(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]), "k3")
    torch.testing.assert_close(out, torch.tensor([0.5 - math.log(0.5) - 1]))


def test_grpo_config_checks():
    with pytest.raises(ConfigError, match="downstream.ppo.group_size"):
        validate(compose_config(TINY_GRPO + ["downstream.ppo.group_size=3"]))
    with pytest.raises(ConfigError, match="downstream.ppo.kl_kind"):
        validate(compose_config(TINY_GRPO + ["downstream.ppo.kl_kind=k1"]))
    with pytest.raises(ConfigError, match="downstream.ppo.algorithm"):
        validate(compose_config(TINY_GRPO + ["downstream.ppo.algorithm=reinforce"]))
    validate(compose_config(TINY_GRPO))


def _run(cfg, world, scorer, cache, out):
    out.mkdir(parents=True, exist_ok=True)
    metrics, history, artifacts = ppo_stage(cfg, world, scorer, cache, out, False)
    return {k: v for k, v in metrics.items() if k != "ppo/seconds"}, history, artifacts


def test_grpo_runs_without_a_value_model_and_ppo_refuses(world, zoo_cache, tmp_path):
    torch.set_num_threads(1)
    cfg = compose_config(TINY_GRPO + [f"cache_dir={zoo_cache}"])
    path, _ = zoo.policy_path(cfg.downstream.policy.model, world, zoo_cache, progress=False)
    _, tok = zoo.load_causal_lm(path)
    scorer = VerifierScorer(world, tok)  # value_init() is None: no value model to build
    assert scorer.value_init() is None
    m1, h1, artifacts = _run(cfg, world, scorer, zoo_cache, tmp_path / "a")
    m2, h2, _ = _run(cfg, world, scorer, zoo_cache, tmp_path / "b")
    assert m1 == m2 and h1 == h2  # deterministic per seed
    assert "ppo/value_loss" not in h1 and [s for s, _ in h1["ppo/gold"]] == [0, 1, 2]
    assert all(np.isfinite(v) for v in m1.values())
    assert m1["ppo/proxy"] == pytest.approx(m1["ppo/gold"])  # the verifier is both reward and gold
    assert h1["ppo/kl"][0][1] == pytest.approx(0.0, abs=1e-6)
    assert h1["ppo/train_kl"][0][1] >= 0  # k3 (GRPO's default) is never negative
    assert {p.name for p in artifacts} == {"ppo_curve.png", "ppo_samples.jsonl"}
    # The policy moved: the second step's rollout starts from an updated policy, so the KL to the SFT is > 0.
    assert h1["ppo/kl"][-1][1] != pytest.approx(0.0, abs=1e-6)
    ppo_cfg = compose_config(TINY_GRPO + [f"cache_dir={zoo_cache}", "downstream.ppo.algorithm=ppo"])
    with pytest.raises(ValueError, match="no value-model initialisation.*algorithm=grpo"):
        ppo_stage(ppo_cfg, world, scorer, zoo_cache, tmp_path / "c", False)
