"""The base-model zoo: build, cache, load like a hub model, and pretraining that really teaches the world."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rmexp import zoo
from rmexp.config import load_model_config
from rmexp.world.tokenizer import build_tokenizer


def _cfg(model: str, **changes):
    cfg = load_model_config(model)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def xs_path(world, zoo_cache):
    return zoo.model_path(_cfg("toy_llama_xs"), world, zoo_cache, progress=False)


def test_round_trip_same_logits_as_a_fresh_in_memory_build(world, xs_path):
    """Loading the saved model gives the logits of the same recipe trained again in memory."""
    cfg = _cfg("toy_llama_xs")
    tok = build_tokenizer(world.vocab)
    torch.manual_seed(cfg.seed)
    fresh = AutoModelForCausalLM.from_config(zoo._hf_config(cfg, tok))
    zoo.pretrain(fresh, tok, world, cfg, progress=False)
    loaded, loaded_tok = zoo.load_causal_lm(xs_path)
    x = torch.tensor([loaded_tok("<bos> <user> what is 3 plus 4 ? <assistant>", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x).logits, fresh.eval()(x).logits, atol=1e-5, rtol=1e-5)
    assert (xs_path / "model.safetensors").exists() and not list(xs_path.glob("*.bin"))
    info = json.loads((xs_path / "rmexp_zoo.json").read_text())
    assert info["config"]["n_layer"] == 1 and info["world_seed"] == 0


def test_cached_model_is_not_rebuilt(world, zoo_cache, xs_path, monkeypatch):
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert zoo.model_path(_cfg("toy_llama_xs"), world, zoo_cache, progress=False) == xs_path
    # The same recipe under another name is the same model.
    assert zoo.model_path(_cfg("toy_llama_xs", name="alias"), world, zoo_cache, progress=False) == xs_path


def test_key_ignores_what_does_not_change_the_weights():
    base = _cfg("toy_llama_s")
    assert zoo.zoo_key(base, 0) == zoo.zoo_key(_cfg("toy_llama_s", size="small", sft_wrong_rate=0.1,
                                                                   rm_lr=1e-4), 0)  # the RM's rate, not the base's
    random_a = _cfg("random_llama_s")
    assert zoo.zoo_key(random_a, 0) == zoo.zoo_key(_cfg("random_llama_s", pretrain_steps=999), 0)
    assert zoo.zoo_key(base, 0) != zoo.zoo_key(_cfg("toy_llama_s", pretrain_steps=601), 0)
    assert zoo.zoo_key(base, 0) != zoo.zoo_key(base, 1)  # another world
    sft = _cfg("toy_llama_s_sft")
    assert zoo.zoo_key(sft, 0) != zoo.zoo_key(_cfg("toy_llama_s_sft", sft_wrong_rate=0.1), 0)


def test_different_recipe_gets_another_directory(world, zoo_cache, xs_path):
    other = zoo.model_path(_cfg("toy_llama_xs", pretrain_steps=20), world, zoo_cache, progress=False)
    assert other != xs_path and (other / "rmexp_zoo.json").exists()


def test_a_truncated_zoo_model_is_rebuilt_with_one_warning(world, zoo_cache, capsys):
    """The zoo publishes through rmexp.cache: a manifest with each file's sha256, verified on every load."""
    from rmexp.cache import MANIFEST, content_id

    cfg = _cfg("toy_llama_xs", pretrain_steps=20)
    path = zoo.model_path(cfg, world, zoo_cache, progress=False)
    assert "model.safetensors" in json.loads((path / MANIFEST).read_text())["files"]
    before, weights = content_id(path), (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    capsys.readouterr()
    again = zoo.model_path(cfg, world, zoo_cache, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert again == path and len(err) == 1 and "model.safetensors does not match its sha256" in err[0]
    assert (path / "model.safetensors").read_bytes() == weights and content_id(path) == before  # same seed, same model


def test_pretrained_base_has_clearly_lower_heldout_loss_than_random(world, zoo_cache, xs_path):
    random_path = zoo.model_path(_cfg("toy_llama_xs", init="random", pretrain_steps=0), world, zoo_cache,
                                 progress=False)
    losses = {}
    for name, path in (("pretrained", xs_path), ("random", random_path)):
        model, tok = zoo.load_causal_lm(path)
        losses[name] = zoo.heldout_lm_loss(model, tok, world)
    # A random-init model is near log(vocab) ~ 5.6 nats; the pretrained one far below.
    assert losses["random"] > 5.0
    assert losses["pretrained"] < 0.5 * losses["random"]


def test_sft_variant_starts_from_cached_base(world, zoo_cache, xs_path, monkeypatch):
    monkeypatch.setattr(zoo, "pretrain", lambda *a, **k: pytest.fail("pretrained again instead of using the cache"))
    path = zoo.model_path(_cfg("toy_llama_xs_sft", sft_steps=10), world, zoo_cache, progress=False)
    info = json.loads((path / "rmexp_zoo.json").read_text())
    assert info["sft_final_loss"] is not None
    assert path.name.startswith("llama_xs_sft-")


def test_gpt2_family_builds_and_samples(world, zoo_cache):
    cfg = _cfg("toy_gpt2_xs", pretrain_steps=30)
    model, tok = zoo.load_causal_lm(zoo.model_path(cfg, world, zoo_cache, progress=False))
    assert model.config.model_type == "gpt2"
    samples = zoo.sample(model, tok, ["what is 3 plus 4 ?", "tell me about cats ."], n=3, temperature=1.0,
                         max_new_tokens=8, seed=0)
    assert [len(s) for s in samples] == [3, 3]
    again = zoo.sample(model, tok, ["what is 3 plus 4 ?", "tell me about cats ."], n=3, temperature=1.0,
                       max_new_tokens=8, seed=0)
    assert samples == again  # same seed, same samples


def test_missing_hub_model_gives_one_clear_error(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError, match="huggingface-cli download"):
        zoo.load_causal_lm("no-such-org/no-such-model")
