"""Config composition and validation: bad input gets one clear error before any work starts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from rmexp.config import CONF_DIR, ConfigError, config_hash, validate
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_config_composes_and_validates():
    cfg = compose_config()
    validate(cfg)
    assert cfg.model.name == "toy_llama_s" and cfg.data.source == "toy"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "hf"))
def test_every_zoo_model_config_validates(name):
    validate(compose_config([f"model={name}"]))


@pytest.mark.parametrize("overrides, message", [
    (["data.size=-5"], "data.size=-5 is not allowed; it must be > 0"),
    (["train.epochs=0"], "train.epochs=0 is not allowed; it must be > 0"),
    (["data.label_noise=1.5"], "data.label_noise=1.5 is not allowed; it must be between 0 and 1"),
    (["train.schedule=cosin"], "train.schedule='cosin' is not allowed; choose one of"),
    # A dict override merges into the default mix, so a mix names all six domains.
    (["data.domain_weights={Factuality:0,Precise IF:0,Math:0,Safety:0,Focus:0,Ties:0}"],
     "must sum to a positive total"),
    (["data.domain_weights={Factuality:-1,Math:2}"], "weights must be >= 0"),
    (["model.n_head=3"], "model.n_head=3 is not allowed; it must divide model.d_model=64"),
    (["downstream.ppo.rollout_batch=10", "downstream.ppo.minibatch=4"], "must divide downstream.ppo.rollout_batch=10"),
    (["model=hf"], "model.path"),
])
def test_bad_values_give_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        cfg = compose_config(overrides)
        validate(cfg)


def test_unknown_domain_in_a_mix_is_refused():
    with pytest.raises(Exception, match="Maths"):
        validate(compose_config(["data.domain_weights={Factuality:1,Maths:1}"]))


def test_unknown_key_is_refused():
    with pytest.raises((ConfigAttributeError, ConfigKeyError, Exception), match="epoch"):
        compose_config(["train.epoch=2"])


def test_wrong_type_is_refused():
    with pytest.raises((ValidationError, Exception), match="epochs"):
        compose_config(["train.epochs=two"])


def test_unknown_model_is_refused_naming_the_options():
    with pytest.raises(Exception, match="toy_llama_s"):
        compose_config(["model=toy_llama_xxl"])


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1, "b": 3})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rmexp", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_resolved_config():
    out = _cli("--cfg", "job", "model=toy_gpt2_s")
    assert out.returncode == 0, out.stderr
    assert "family: gpt2" in out.stdout and "label_noise: 0.0" in out.stdout


def test_cli_bad_value_exits_2_with_one_line():
    out = _cli("data.size=-1")
    assert out.returncode == 2
    assert "data.size=-1 is not allowed" in out.stderr and "Traceback" not in out.stderr
