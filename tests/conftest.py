"""Shared fixtures: composed configs and one zoo cache for the whole test session."""
from __future__ import annotations

import os

import pytest

import rmexp  # noqa: F401  (first: it pins the CPU numerics before torch runs a kernel)
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(1)


def compose_config(overrides: list[str] | None = None):
    from hydra import compose, initialize_config_dir

    from rmexp.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """One cache for the session, so each tiny zoo model is built once."""
    return tmp_path_factory.mktemp("rmexp_cache")


@pytest.fixture(scope="session")
def world():
    from rmexp.world.core import World

    return World(0)


@pytest.fixture(scope="session")
def fixture_files(tmp_path_factory):
    """`python -m rmexp.fixtures` output (a tiny Qwen2-shaped model and files in the real schemas), built once."""
    from rmexp.fixtures import write_fixtures

    return write_fixtures(tmp_path_factory.mktemp("fixtures"), seed=0)
