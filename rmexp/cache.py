"""The one way a stage's output is cached: compute once under a lock, publish atomically, verify, load.

An entry is a directory ``<cache>/<kind>/<label>-<key>``. The first process to ask for it takes a file lock,
builds into a temporary directory beside it, checks the weights it wrote are finite, writes the manifest LAST
(every file with its sha256), then renames the directory into place; processes asking for the same key meanwhile
wait on the lock and then load the published entry. A crash mid-build leaves no entry (only a temporary directory
that the next build removes). Every load verifies the manifest first; an entry whose manifest is missing or whose
files do not match it is rebuilt, with one warning line.

Keys must hold exactly what determines the output; an entry built from another entry (an RM from a base model,
samples from a policy) puts that entry's :func:`content_id` in its key, never a name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, TypeVar

from filelock import FileLock

T = TypeVar("T")

MANIFEST = "rmexp_manifest.json"
META_PREFIX = "rmexp_"  # our bookkeeping files (build times, training curves): not part of an entry's content id


class CacheError(RuntimeError):
    """A build that produced something that must not be published (non-finite weights, nothing at all)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def _problem(entry: Path) -> str | None:
    """Why a published entry cannot be used, or None when it verifies."""
    manifest = entry / MANIFEST
    if not manifest.is_file():
        return "incomplete (no manifest)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "damaged (unreadable manifest)"
    for name, digest in files.items():
        path = entry / name
        if not path.is_file():
            return f"damaged ({name} is missing)"
        if _sha256(path) != digest:
            return f"damaged ({name} does not match its sha256)"
    return None


def _check_finite_weights(folder: Path) -> None:
    """Refuse to publish weights holding NaN or inf (a diverged training run)."""
    from safetensors.numpy import load_file
    import numpy as np

    for path in sorted(folder.rglob("*.safetensors")):
        for name, tensor in load_file(str(path)).items():
            if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
                raise CacheError(f"cache: {path.name} tensor {name} holds non-finite values; nothing was cached")


def _ids_of(files: dict[str, str]) -> str:
    content = {k: v for k, v in files.items() if not Path(k).name.startswith(META_PREFIX)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def content_id(path: Path | str) -> str:
    """What a published entry or a weights directory holds: a hash of its files' sha256 (our own bookkeeping
    files ``rmexp_*`` left out, so build times do not change it). A single file: its sha256."""
    path = Path(path).expanduser()
    if (path / MANIFEST).is_file():
        return _ids_of(json.loads((path / MANIFEST).read_text())["files"])
    if path.is_dir():
        return _ids_of(_file_hashes(path))
    if path.is_file():
        return _sha256(path)[:16]
    raise FileNotFoundError(f"content_id: {str(path)!r} does not exist")


def entry_path(kind: str, key: str, cache: Path | str, label: str = "") -> Path:
    return Path(cache).expanduser() / kind / (f"{label}-{key}" if label else key)


def cached(kind: str, key: str, cache: Path | str, build: Callable[[Path], object], load: Callable[[Path], T],
           *, label: str = "") -> T:
    """``load(entry)`` of the entry ``<cache>/<kind>/<label>-<key>``, first running ``build(folder)`` (which writes
    the entry's files into ``folder``) unless a verified entry exists. See the module docstring."""
    entry = entry_path(kind, key, cache, label)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if entry.exists():
            problem = _problem(entry)
            if problem is None:
                return load(entry)
            print(f"warning: cache entry {entry} is {problem}; rebuilding it", file=sys.stderr, flush=True)
            shutil.rmtree(entry)
        tmp = entry.with_name(f".{entry.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            files = _file_hashes(tmp)
            if not files:
                raise CacheError(f"cache: building {kind} entry {entry.name} wrote no files")
            _check_finite_weights(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"kind": kind, "key": key, "files": files}, indent=1))
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return load(entry)


def write_json(path: Path, value) -> Path:
    """JSON that refuses NaN/inf (strict), for cached rows and samples."""
    path.write_text(json.dumps(value, allow_nan=False))
    return path
