"""Compute once under a lock, publish atomically, load: the one helper every cached stage uses.

An entry is a directory `cache/<kind>/<label>-<key>` holding the files `build` wrote and, written LAST, a
`manifest.json` listing every file with its sha256. An entry without a manifest, or whose files do not match it,
is incomplete or corrupt: it is rebuilt (one warning line). `build` writes into a temporary directory that is
renamed into place only after the manifest is written, so a reader never sees a half-written entry.
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
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _write_manifest(root: Path) -> None:
    files = {name: _sha256(root / name) for name in _files(root)}
    (root / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))


def _verify(root: Path) -> str | None:
    """None when the entry is complete and intact, else what is wrong."""
    manifest = root / MANIFEST
    if not manifest.exists():
        return "no manifest (an interrupted build)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable manifest ({e})"
    if sorted(files) != _files(root):
        return "its files differ from the manifest's list"
    bad = [name for name, digest in files.items() if _sha256(root / name) != digest]
    return f"hash mismatch in {bad}" if bad else None


def content_id(path: Path) -> str:
    """The identity of a published entry (or any weights dir): a hash of its manifest, or of its files' hashes."""
    path = Path(path)
    manifest = path / MANIFEST
    if manifest.exists():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    files = {name: _sha256(path / name) for name in _files(path)}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def cached(kind: str, key: str, cache: Path, build: Callable[[Path], None], load: Callable[[Path], T],
           *, label: str = "") -> T:
    """Load the entry `cache/<kind>/<label>-<key>`, building it first (under a file lock) if it is missing or bad.

    `build(tmp_dir)` writes the entry's files into `tmp_dir` and must raise on non-finite results, so nothing
    non-finite is ever published; `load(entry_dir)` reads them back."""
    entry = Path(cache) / kind / (f"{label}-{key}" if label else key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if entry.exists():
            problem = _verify(entry)
            if problem is None:
                return load(entry)
            print(f"warning: cache entry {entry} is incomplete or corrupt ({problem}); rebuilding it",
                  file=sys.stderr, flush=True)
            shutil.rmtree(entry)
        tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            _write_manifest(tmp)
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load(entry)
