"""Pinned CPU numerics (rmexp/__init__.py) and their place in every cache key and trial key (rmexp.config.numerics)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rmexp import CPU_NUMERICS, PINS_CPU_NUMERICS, trial, zoo
from rmexp.config import load_model_config, numerics
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import json, os, rmexp, torch, torch._inductor.config as inductor; torch.ones(3).softmax(0); "
         "print(json.dumps({'cpu': torch.backends.cpu.get_cpu_capability(), 'march': inductor.cpp.march, "
         "'env': {k: os.environ.get(k) for k in rmexp.CPU_NUMERICS}, 'numerics': rmexp.config.numerics()}))")


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


def _probe(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CPU_NUMERICS}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", "import rmexp.config; " + PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not PINS_CPU_NUMERICS or not _has_avx2(),
                    reason="the pins are x86-64 instruction sets; this CPU has no AVX2")
def test_importing_rmexp_pins_the_cpu_kernels_at_avx2_whatever_the_cpu_offers():
    got = _probe({})
    assert got["env"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                          "TORCHINDUCTOR_CPP_MARCH": "haswell"}
    assert got["cpu"] == "AVX2"  # ATen's dispatch, after a kernel ran (an AVX-512 CPU would otherwise give AVX512)
    assert got["march"] == "haswell"  # torch.compile's C++ kernels (train.compile): not -march=native
    assert got["numerics"]["cpu"] == "AVX2" and got["numerics"]["mkl_cbwr"] == "AVX2"


@pytest.mark.skipif(not PINS_CPU_NUMERICS, reason="x86-64 instruction sets")
def test_a_value_the_user_set_is_kept_and_recorded():
    got = _probe({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"})
    assert got["env"]["ATEN_CPU_CAPABILITY"] == "default" and got["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert got["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # the one not set is still pinned
    assert got["cpu"] == "DEFAULT" and got["numerics"]["cpu"] == "DEFAULT"
    assert got["numerics"]["mkl_cbwr"] == "COMPATIBLE"


def test_the_numerics_are_part_of_the_zoo_key_and_the_trial_key(monkeypatch):
    """Another CPU kernel level or library version is another result: neither a cached base model nor a finished
    trial made under one is reused under the other."""
    import rmexp.zoo as zoo_module

    cfg, trial_cfg = load_model_config("toy_llama_xs"), compose_config(["preset=tiny"])
    zoo_before, trial_before = zoo.zoo_key(cfg, 0), trial.trial_key(trial_cfg)
    for field in ("cpu", "mkl_cbwr", "torch", "transformers"):
        change = {field: f"other-{numerics()[field]}"}  # differs from this machine's value, whatever it is
        other = {**numerics(), **change}
        monkeypatch.setattr(zoo_module, "numerics", lambda: other)
        monkeypatch.setattr(trial, "numerics", lambda: other)
        assert zoo.zoo_key(cfg, 0) != zoo_before, change
        assert trial.trial_key(trial_cfg) != trial_before, change
    monkeypatch.undo()
    assert zoo.zoo_key(cfg, 0) == zoo_before and trial.trial_key(trial_cfg) == trial_before
    # Another world is another result too, for every trial (a random-init base's config does not name the world).
    for name in ("preset=tiny", "model=random_llama_s"):
        before = trial.trial_key(compose_config([name]))
        monkeypatch.setattr(trial, "WORLD_VERSION", trial.WORLD_VERSION + 1)
        assert trial.trial_key(compose_config([name])) != before, name
        monkeypatch.undo()


def test_every_run_records_its_numerics_as_params():
    import torch
    import transformers

    params = trial.trial_params(compose_config(["preset=tiny"]), None)
    assert params["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert params["mkl_cbwr"] == os.environ.get("MKL_CBWR", "")
    assert params["torch"] == torch.__version__ and params["transformers"] == transformers.__version__


def test_a_compiled_trial_is_keyed_by_its_compiler_too(monkeypatch):
    """train.compile=true: another C++ compiler (or triton) builds other kernels, so another trial and RM key;
    an eager trial's key does not depend on the compiler."""
    from rmexp.rm import classifier

    compiled = compose_config(["preset=tiny", "train.packing=true", "train.compile=true"])
    eager = compose_config(["preset=tiny", "train.packing=true"])
    before = trial.trial_key(compiled), trial.trial_key(eager)
    monkeypatch.setattr(classifier, "compiler_identity", lambda: {"cxx": "another compiler", "march": None,
                                                                  "triton": None})
    assert trial.trial_key(compiled) != before[0] and trial.trial_key(eager) == before[1]
