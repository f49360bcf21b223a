"""Config composition and validation: bad input gets one clear error before any work starts."""
from __future__ import annotations

import re

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


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("random_*.yaml")))
def test_every_random_init_control_matches_its_pretrained_base_but_for_pretraining(name):
    """A control differs from toy_<family>_<size> only in init: same shape, mix and RM rate (the study's pairs)."""
    from rmexp.config import load_model_config

    control, base = load_model_config(name), load_model_config(name.replace("random_", "toy_", 1))
    assert (control.init, base.init) == ("random", "pretrained")
    for key in ("family", "size", "n_layer", "d_model", "n_head", "corpus_mix", "rm_lr"):
        assert control[key] == base[key], key


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
    (["train.compile=true"], "train.compile=True is not allowed; it needs train.packing=true"),
    (["rm=dpo", "train.packing=true"],
     "train.packing=True is not allowed; rm=dpo does not train packed; kinds that do: ['classifier', 'ensemble']"),
    (["rm=judge", "train.packing=true", "train.compile=true"], "rm=judge does not train packed"),
    (["train.packing=true", "train.compile=true", "train.gradient_checkpointing=true"],
     "train.compile=True is not allowed; it does not go with train.gradient_checkpointing=true"),
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


# ---------------------------------------------------------------------------------------------------- RM kinds
def _register_fake_kind(monkeypatch):
    from dataclasses import dataclass

    from rmexp.rm import RM_KINDS, RMKind

    @dataclass
    class FakeOptions:
        beta: float = 0.1        # a float option
        members: int = 3         # an int option

    kind = RMKind("fake", FakeOptions, build=lambda ctx: None)
    monkeypatch.setitem(RM_KINDS, "fake", kind)
    return kind


def test_rm_group_defaults_to_the_classifier():
    from rmexp.rm import RM_KINDS, rm_options

    cfg = compose_config()
    assert dict(cfg.rm) == {"kind": "classifier"} and "classifier" in RM_KINDS
    assert type(rm_options(cfg)).__name__ == "ClassifierOptions"


def test_unknown_rm_kind_is_refused_listing_the_registered_ones(monkeypatch):
    _register_fake_kind(monkeypatch)
    from rmexp.rm import RM_KINDS

    listed = ", ".join(repr(k) for k in sorted(RM_KINDS))  # every registered kind, the fake one included
    assert "'fake'" in listed and "'classifier'" in listed
    with pytest.raises(ConfigError, match=re.escape(f"rm.kind='nope' is not allowed; registered kinds: [{listed}]")):
        validate(compose_config(["rm.kind=nope"]))


def test_rm_options_are_checked_against_the_kinds_dataclass(monkeypatch):
    from rmexp.rm import rm_options

    _register_fake_kind(monkeypatch)
    cfg = compose_config(["rm.kind=fake", "+rm.beta=0.5"])
    validate(cfg)
    opts = rm_options(cfg)
    assert (opts.beta, opts.members) == (0.5, 3)  # given, and the dataclass default
    with pytest.raises(ConfigError, match=r"rm.bta=0.5 is not allowed; rm=fake has options \['beta', 'members'\]"):
        validate(compose_config(["rm.kind=fake", "+rm.bta=0.5"]))
    with pytest.raises(ConfigError, match="rm.members"):
        validate(compose_config(["rm.kind=fake", "+rm.members=many"]))
    with pytest.raises(ConfigError, match=r"rm.beta=0.5 is not allowed; rm=classifier has options \(none\)"):
        validate(compose_config(["+rm.beta=0.5"]))  # another kind's option


def test_fail_stage_names_a_registered_stage():
    validate(compose_config(["fail_stage=ppo"]))
    with pytest.raises(ConfigError, match=r"fail_stage='nope' is not allowed; choose one of \[None, 'rm', 'bench', 'bon'"):
        validate(compose_config(["fail_stage=nope"]))


def test_cli_unknown_rm_kind_exits_2_before_any_work():
    out = _cli("rm.kind=nope")
    assert out.returncode == 2 and "registered kinds" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
