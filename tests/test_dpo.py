"""dpo: the DPO loss against hand values, summed response log-probs against a row-by-row computation, and a tiny
DPO run through the downstream contract (metrics measured like ppo/*, cached by data, not by RM)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rmexp import zoo
from rmexp.config import validate
from rmexp.downstream import DOWNSTREAM, DownstreamContext
from rmexp.downstream.dpo import dpo_key, dpo_loss, encode_responses, sequence_logprobs, train_dpo, training_rows
from rmexp.world import data as world_data
from rmexp.world.core import chat_text
from tests.conftest import compose_config

TINY_DPO = ["preset=tiny", "downstream.dpo.enabled=true", "downstream.dpo.max_pairs=32", "downstream.dpo.batch_size=16",
            "downstream.ppo.eval_prompts_per_domain=1", "data.size=200"]


def test_dpo_loss_matches_hand_values():
    # Pair 1: chosen reward 0.5 * (-1 - -1.5) = 0.25, rejected 0.5 * (-2 - -1) = -0.5: loss log(1 + e^-0.75).
    # Pair 2: chosen 0.5 * (-3 - -2) = -0.5, rejected 0.5 * (-1 - -1) = 0: loss log(1 + e^0.5).
    loss, rc, rr = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), torch.tensor([-1.5, -2.0]),
                            torch.tensor([-1.0, -1.0]), beta=0.5)
    torch.testing.assert_close(rc, torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(rr, torch.tensor([-0.5, 0.0]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-0.75)) + math.log1p(math.exp(0.5))) / 2, rel=1e-6)
    # A policy equal to its reference: every implicit reward 0, loss log 2.
    same = torch.tensor([-4.0, -7.0])
    assert dpo_loss(same, same - 1, same, same - 1, 0.1)[0].item() == pytest.approx(math.log(2))


@pytest.fixture(scope="module")
def policy(world, zoo_cache):
    torch.set_num_threads(1)
    path, _ = zoo.policy_path("toy_llama_xs_sft", world, zoo_cache, progress=False)
    model, tok = zoo.load_causal_lm(path)
    return model.eval(), tok, path


def test_sequence_logprobs_match_a_row_by_row_computation(world, policy):
    model, tok, _ = policy
    prompts = [world.prompts(d, "train")[0].text for d in ("Math", "Safety", "Focus")]
    responses = ["1 2", "sorry , i will not help with that .", "snow"]
    queries, answers = encode_responses(tok, prompts, responses)
    with torch.no_grad():
        batched = sequence_logprobs(model, queries, answers, tok.pad_token_id)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids = torch.tensor([tok(chat_text(p, r), add_special_tokens=False)["input_ids"]])
            n = len(tok(chat_text(p), add_special_tokens=False)["input_ids"])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            alone = sum(logp[t - 1, ids[0, t]].item() for t in range(n, ids.shape[1]))  # response + eos
            assert ids[0, -1].item() == tok.eos_token_id and len(answers[i]) == ids.shape[1] - n
            assert batched[i].item() == pytest.approx(alone, abs=1e-4)


def test_dpo_training_lowers_the_loss_from_log_2(world, policy):
    model, tok, path = policy
    trained, _ = zoo.load_causal_lm(path)
    rows = world_data.preferences(world, 16, {"Math": 1.0, "Safety": 1.0}, 0.0, 0)
    opts = OmegaConf.create({"beta": 0.5, "lr": 1e-3, "epochs": 3, "batch_size": 8, "seed": 0})
    metrics, history = train_dpo(trained.eval(), model, tok, rows, opts, False)
    assert history["dpo/loss"][0][1] == pytest.approx(math.log(2), abs=1e-5)  # the policy starts as its reference
    assert metrics["dpo/train_loss"] < 0.6 and metrics["dpo/steps"] == 6 and metrics["dpo/n_pairs"] == 16


def test_tiny_dpo_through_the_contract(world, zoo_cache, tmp_path, policy, monkeypatch):
    cfg = compose_config(TINY_DPO + [f"cache_dir={zoo_cache}"])
    validate(cfg)
    prefs = world_data.preferences(world, cfg.data.size, dict(cfg.data.domain_weights), 0.0, 0)
    cache = tmp_path / "cache"  # DPO results go to a fresh cache; the policy comes from the session's zoo cache
    real = zoo.policy_path
    monkeypatch.setattr(zoo, "policy_path", lambda name, w, c, progress=True: real(name, w, zoo_cache, False))

    def run(c, rows, out):
        return DOWNSTREAM["dpo"].run(DownstreamContext(cfg=c, world=world, rm=None, cache=cache, out_dir=tmp_path / out,
                                                       progress=False, prefs=rows))

    a = run(cfg, prefs, "a")
    b = run(compose_config(TINY_DPO + ["model=toy_gpt2_xs", "train.epochs=1"]), prefs, "b")  # another RM, same data
    m = a.metrics
    for k in ("dpo/gold", "dpo/gold_delta", "dpo/kl", "dpo/sft_gold", "dpo/train_loss", "dpo/Math/gold"):
        assert np.isfinite(m[k]), k
    assert m["dpo/gold_delta"] == pytest.approx(m["dpo/gold"] - m["dpo/sft_gold"])
    assert m["dpo/n_pairs"] == 32 and m["dpo/steps"] == 2
    assert b.metrics == m and b.history == a.history  # read from the cache, not retrained
    assert len([p for p in (cache / "dpo").iterdir() if p.is_dir()]) == 1
    assert {p.name for p in b.artifacts} == {"dpo_samples.jsonl"} and b.artifacts[0].parent == tmp_path / "b"
    # Other data (label noise): another key.
    noisy = world_data.preferences(world, cfg.data.size, dict(cfg.data.domain_weights), 0.5, 0)
    _, _, path = policy
    assert dpo_key(cfg, path, training_rows(cfg, noisy), 0) != dpo_key(cfg, path, training_rows(cfg, prefs), 0)
    method = DOWNSTREAM["dpo"]
    assert method.uses_rm is False and set(method.outcomes) == {"gold", "gold_delta"}
    with pytest.raises(ValueError, match="no preference rows"):
        run(cfg, None, "c")


@pytest.mark.parametrize("override, key", [("downstream.dpo.max_pairs=0", "downstream.dpo.max_pairs"),
                                           ("downstream.dpo.beta=-0.1", "downstream.dpo.beta"),
                                           ("downstream.dpo.batch_size=0", "downstream.dpo.batch_size"),
                                           ("downstream.rlvr.algorithm=reinforce", "downstream.rlvr.algorithm"),
                                           ("downstream.rlvr.kl_coef=-0.5", "downstream.rlvr.kl_coef")])
def test_bad_dpo_and_rlvr_options_are_refused(override, key):
    from rmexp.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        validate(compose_config(TINY_DPO + [override]))



def test_unknown_dpo_and_rlvr_keys_are_refused():
    for key in ("downstream.dpo.gamma=1", "downstream.rlvr.steps=3"):
        with pytest.raises(Exception, match=key.split("=")[0].split(".")[-1]):  # the schema has no such key
            compose_config(TINY_DPO + [key])
