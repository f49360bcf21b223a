"""Real preference data through the data config: the ready hub configs (conf/data/*.yaml) and their column layouts,
the one-line refusal when a hub dataset cannot be reached, column mappings, margins and mixes of sources."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rmexp import data, preflight
from rmexp.config import ConfigError, validate
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent
READY = {"ultrafeedback": [("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")],
         "skywork": [("Skywork/Skywork-Reward-Preference-80K-v0.2", "train")],
         "tulu3_pref": [("allenai/llama-3.1-tulu-3-8b-preference-mixture", "train")],
         "hh": [("Anthropic/hh-rlhf", "train")],
         "skywork_ultrafeedback": [("Skywork/Skywork-Reward-Preference-80K-v0.2", "train"),
                                   ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")]}


def _user(i):
    return {"role": "user", "content": f"What is {i} plus {i}?"}


def _said(text):
    return {"role": "assistant", "content": text}


# One row per dataset in its published schema (the dataset cards' features), question i, answers 2i and 2i+1.
SCHEMAS = {
    "HuggingFaceH4/ultrafeedback_binarized": lambda i: {
        "prompt": _user(i)["content"], "prompt_id": f"p{i}", "chosen": [_user(i), _said(f"{2 * i}")],
        "rejected": [_user(i), _said(f"{2 * i + 1}")], "messages": [_user(i), _said(f"{2 * i}")],
        "score_chosen": 8.0, "score_rejected": 3.0},
    "Skywork/Skywork-Reward-Preference-80K-v0.2": lambda i: {
        "chosen": [_user(i), _said(f"{2 * i}")], "rejected": [_user(i), _said(f"{2 * i + 1}")], "source": "magpie"},
    "allenai/llama-3.1-tulu-3-8b-preference-mixture": lambda i: {
        "id": f"t{i}", "prompt": _user(i)["content"], "chosen": [_user(i), _said(f"{2 * i}")],
        "rejected": [_user(i), _said(f"{2 * i + 1}")], "source": "tulu"},
    "Anthropic/hh-rlhf": lambda i: {
        "chosen": f"\n\nHuman: {_user(i)['content']}\n\nAssistant: {2 * i}",
        "rejected": f"\n\nHuman: {_user(i)['content']}\n\nAssistant: {2 * i + 1}"},
}


@pytest.fixture
def fake_hub(monkeypatch):
    """The hub, as 20 rows per dataset in its published schema; records what was asked for."""
    calls = []

    def read_hub_rows(dataset_id, split, subset=None):
        calls.append((dataset_id, split))
        return [SCHEMAS[dataset_id](i) for i in range(20)]
    monkeypatch.setattr(data, "read_hub_rows", read_hub_rows)
    monkeypatch.setattr(preflight, "_check_coverage", lambda *a: None)  # the toy tokenizer cannot read English
    preflight.reset_memo()
    yield calls
    preflight.reset_memo()


@pytest.mark.parametrize("name", sorted(READY))
def test_ready_config_composes_validates_and_reads_its_layout(name, fake_hub):
    cfg = compose_config([f"data={name}", "data.size=10"])
    validate(cfg)  # schema, values, and preflight's read of the rows
    assert sorted(set(fake_hub)) == sorted(READY[name])
    rows = data.preference_rows(cfg, None)
    assert len(rows) == 10
    # Every layout gives the question as the prompt (HH: the transcript before the last answer) and the bare answers.
    head = "Human: " if name == "hh" else ""
    for r in rows:
        i = int(r["prompt"].split()[-1][:-1])
        assert (r["prompt"], r["chosen"], r["rejected"]) == (f"{head}What is {i} plus {i}?", f"{2 * i}", f"{2 * i + 1}")
    # The first line of each ready config is the command that uses it.
    first = (ROOT / "conf" / "data" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith(f"# python -m rmexp data={name}")


def test_ready_mix_draws_half_from_each_source(fake_hub):
    rows = data.preference_rows(compose_config(["data=skywork_ultrafeedback", "data.size=10"]), None)
    assert Counter(r["id"].split(":")[0] for r in rows) == {"Skywork/Skywork-Reward-Preference-80K-v0.2": 5,
                                                            "HuggingFaceH4/ultrafeedback_binarized": 5}


def _offline_env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.parametrize("name", sorted(READY))
def test_each_ready_hub_dataset_offline_gives_one_line_naming_it_and_the_file_route(name, tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache: preflight refuses with the dataset's name and how to save it as
    a file, before any work (validate runs before the trial touches a model). The CLI run below does the same
    with the environment variables."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    preflight.reset_memo()
    with pytest.raises(ConfigError) as err:
        validate(compose_config([f"data={name}"]))
    msg = str(err.value)
    dataset_id, split = READY[name][0]
    assert "\n" not in msg
    assert msg.startswith(f"config error: data.sources[0].path: could not load dataset '{dataset_id}' "
                          f"(split '{split}'): the hub is offline"), msg
    assert f"datasets.load_dataset('{dataset_id}', split='{split}').to_parquet('FILE.parquet')" in msg
    assert "HF_DATASETS_OFFLINE=1" in msg


@pytest.mark.slow
def test_offline_hub_dataset_on_the_command_line_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rmexp", "data=hh", "preset=tiny", f"cache_dir={tmp_path / 'c'}"],
                          cwd=tmp_path, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: data.sources[0].path: could not load dataset "
                                  "'Anthropic/hh-rlhf'")
    assert not (tmp_path / "c").exists() and not (tmp_path / "mlflow.db").exists()


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_mix_draws_the_configured_shares(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(100)])
    b = _write(tmp_path / "b.jsonl", [{"q": f"b{i}", "good": "x", "bad": "y"} for i in range(100)])
    sources = (f"data.sources=[{{path: {a}, weight: 3}}, "
               f"{{path: {b}, weight: 1, columns: {{prompt: q, chosen: good, rejected: bad}}}}]")
    rows = data.preference_rows(compose_config(["data=files", "data.path=null", sources, "data.size=40"]), None)
    assert Counter(r["id"].split(":")[0] for r in rows) == {a: 30, b: 10}
    assert len({r["prompt"] for r in rows}) == 40  # without replacement
    assert {r["prompt"][0] for r in rows} == {"a", "b"}  # b's mapped columns were read
    again = data.preference_rows(compose_config(["data=files", "data.path=null", sources, "data.size=40"]), None)
    other = data.preference_rows(compose_config(["data=files", "data.path=null", sources, "data.size=40", "seed=1"]),
                                 None)
    assert again == rows and other != rows


def test_a_mix_larger_than_a_source_is_refused_before_work(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(10)])
    cfg = compose_config(["data=files", "data.path=null", f"data.sources=[{{path: {a}}}]", "data.size=20"])
    preflight.reset_memo()
    with pytest.raises(ConfigError, match=r"config error: data.sources: data source '.*a.jsonl' has 10 rows but the "
                                          r"mix asks for 20"):
        validate(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["data.path=x.jsonl", "data.sources=[{path: y.jsonl}]"], "give data.path (one source) or data.sources"),
    (["data.path=null", "data.sources=[{path: y.jsonl, weight: -1}]"], "data.sources[0].weight=-1.0"),
    (["data.path=null", "data.sources=[{weight: 1}]"], "data.sources[0].path=None"),
    (["data.path=null", "data.sources=[{path: y.jsonl}]", "data.margin_column=m"],
     "with data.sources set it per source"),
    (["data.path=x.jsonl", "data.columns.prompt="], "data.columns.prompt=''"),
])
def test_bad_source_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config(["data=files", *overrides]))


def test_files_options_are_refused_for_toy_data():
    with pytest.raises(ConfigError, match="data.margin_column='m' is not allowed; it applies to data.source=files"):
        validate(compose_config(["data.margin_column=m"]))
