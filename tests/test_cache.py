"""rmexp.cache.cached: built once, loaded after; a corrupt or unfinished entry is rebuilt; a failing build
publishes nothing."""
from __future__ import annotations

import json

import pytest

from rmexp.cache import cached, content_id


def _build_counter(calls: list, value: float = 1.5):
    def build(tmp):
        calls.append(tmp)
        (tmp / "out.json").write_text(json.dumps({"value": value}))
    return build


def _load(entry):
    return json.loads((entry / "out.json").read_text())["value"]


def test_built_once_then_loaded(tmp_path):
    calls = []
    assert cached("thing", "k1", tmp_path, _build_counter(calls), _load, label="x") == 1.5
    assert cached("thing", "k1", tmp_path, _build_counter(calls), _load, label="x") == 1.5
    assert len(calls) == 1 and (tmp_path / "thing" / "x-k1" / "manifest.json").exists()
    assert cached("thing", "k2", tmp_path, _build_counter(calls, 2.5), _load, label="x") == 2.5  # another key
    assert len(calls) == 2
    assert not [p for p in (tmp_path / "thing").iterdir() if ".tmp" in p.name]


def test_corrupt_or_unfinished_entries_are_rebuilt(tmp_path, capsys):
    calls = []
    cached("thing", "k", tmp_path, _build_counter(calls), _load)
    entry = tmp_path / "thing" / "k"
    (entry / "out.json").write_text(json.dumps({"value": 99.0}))  # a file changed after publishing
    assert cached("thing", "k", tmp_path, _build_counter(calls), _load) == 1.5
    assert "hash mismatch" in capsys.readouterr().err and len(calls) == 2
    (entry / "manifest.json").unlink()  # as if the build died before its manifest
    assert cached("thing", "k", tmp_path, _build_counter(calls), _load) == 1.5
    assert "no manifest" in capsys.readouterr().err and len(calls) == 3


def test_a_failing_build_publishes_nothing(tmp_path):
    def bad(tmp):
        (tmp / "out.json").write_text(json.dumps({"value": float("nan")}))
        raise FloatingPointError("non-finite result")
    with pytest.raises(FloatingPointError):
        cached("thing", "k", tmp_path, bad, _load)
    assert [p.name for p in (tmp_path / "thing").iterdir()] == ["k.lock"]


def test_content_id_follows_the_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"one")
    first = content_id(tmp_path)
    assert content_id(tmp_path) == first
    (tmp_path / "a.bin").write_bytes(b"two")
    assert content_id(tmp_path) != first
