"""rmexp.cache: build once under a lock, publish atomically with a manifest, verify on load, rebuild the corrupt."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rmexp.cache import MANIFEST, CacheError, cached, content_id, entry_path


def _weights(folder, value=1.0, log=None):
    if log is not None:
        with open(log, "a") as f:
            f.write("built\n")
    save_file({"w": np.full((4, 3), value, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "rmexp_info.json").write_text(json.dumps({"built_at": time.time()}))


def _load(folder):
    return load_file(str(folder / "model.safetensors"))["w"]


def test_builds_once_then_loads_and_the_manifest_holds_each_files_sha256(tmp_path):
    log = tmp_path / "log"
    first = cached("zoo", "k1", tmp_path, lambda d: _weights(d, 2.0, log), _load, label="toy")
    again = cached("zoo", "k1", tmp_path, lambda d: pytest.fail("rebuilt a verified entry"), _load, label="toy")
    assert log.read_text() == "built\n" and (first == 2.0).all() and (again == 2.0).all()
    entry = entry_path("zoo", "k1", tmp_path, "toy")
    assert entry == tmp_path / "zoo" / "toy-k1"
    files = json.loads((entry / MANIFEST).read_text())["files"]
    assert files["model.safetensors"] == hashlib.sha256((entry / "model.safetensors").read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["toy-k1", "toy-k1.lock"]  # no temp dir left


def test_truncated_weights_are_rebuilt_with_one_warning(tmp_path, capsys):
    log = tmp_path / "log"
    cached("rm", "k", tmp_path, lambda d: _weights(d, 3.0, log), _load)
    model = entry_path("rm", "k", tmp_path) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:20])  # a copy cut short (disk full, a killed rsync)
    capsys.readouterr()
    out = cached("rm", "k", tmp_path, lambda d: _weights(d, 3.0, log), _load)
    err = capsys.readouterr().err.strip().splitlines()
    assert (out == 3.0).all() and log.read_text() == "built\nbuilt\n"
    assert len(err) == 1 and err[0].startswith("warning: cache entry") and "model.safetensors" in err[0]


def test_entry_without_manifest_counts_as_incomplete(tmp_path, capsys):
    entry = entry_path("samples", "k", tmp_path)
    entry.mkdir(parents=True)
    (entry / "samples.json").write_text("[]")  # e.g. a crash between the files and the manifest
    assert cached("samples", "k", tmp_path, lambda d: (d / "samples.json").write_text("[1]"),
                  lambda d: json.loads((d / "samples.json").read_text())) == [1]
    assert "incomplete (no manifest)" in capsys.readouterr().err


def test_a_build_that_raises_leaves_no_entry(tmp_path):
    def broken(folder):
        (folder / "half.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        cached("zoo", "k", tmp_path, broken, _load)
    assert [p.name for p in (tmp_path / "zoo").iterdir()] == ["k.lock"]
    assert (cached("zoo", "k", tmp_path, _weights, _load) == 1.0).all()  # the next ask builds it cleanly


def test_non_finite_weights_are_never_published(tmp_path):
    with pytest.raises(CacheError, match="non-finite"):
        cached("rm", "k", tmp_path, lambda d: _weights(d, float("nan")), _load)
    assert not entry_path("rm", "k", tmp_path).exists()


def test_content_id_is_the_content_not_the_name_nor_the_bookkeeping(tmp_path):
    a = cached("zoo", "ka", tmp_path, lambda d: _weights(d, 1.0), lambda d: d, label="llama_s")
    time.sleep(0.01)  # another build time in rmexp_info.json
    b = cached("zoo", "kb", tmp_path, lambda d: _weights(d, 1.0), lambda d: d, label="other_name")
    c = cached("zoo", "kc", tmp_path, lambda d: _weights(d, 1.5), lambda d: d)
    assert content_id(a) == content_id(b) != content_id(c)
    plain = tmp_path / "plain"  # a checkpoint directory without a manifest: the same files, the same id
    plain.mkdir()
    (plain / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    assert content_id(plain) == content_id(a)


def _ask(cache, log, out):
    value = cached("zoo", "shared", cache, lambda d: (time.sleep(1.0), _weights(d, 7.0, log)), _load)
    with open(out, "a") as f:
        f.write(f"{float(value.sum())}\n")


def test_two_processes_asking_for_one_key_build_it_once(tmp_path):
    log, out = tmp_path / "log", tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ask, args=(tmp_path / "cache", log, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n"
    assert out.read_text().split() == ["84.0", "84.0"]  # 12 weights of 7.0, read by both
