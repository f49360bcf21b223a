"""Compute once under a lock, publish atomically, load: the one cache helper every cached stage uses.

An entry is a directory `cache/<kind>/<label>-<key>` whose manifest (written last) lists every file with
its sha256; an entry without a manifest, or whose files do not match it, is rebuilt.
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def _verifies(entry: Path) -> bool:
    manifest = entry / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text())["files"] == _file_hashes(entry)
    except (ValueError, KeyError):
        return False


def content_id(path: Path) -> str:
    """The identity of a published entry or of any weights directory: a hash of its files' hashes."""
    path = Path(path)
    manifest = path / MANIFEST
    files = json.loads(manifest.read_text())["files"] if manifest.is_file() else _file_hashes(path)
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def cached(kind: str, key: str, cache: Path, build: Callable[[Path], None], load: Callable[[Path], T],
           *, label: str = "") -> T:
    entry = Path(cache) / kind / (f"{label}-{key}" if label else key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if entry.exists() and not _verifies(entry):
            print(f"warning: cache entry {entry} is incomplete or corrupt; rebuilding it", file=sys.stderr, flush=True)
            shutil.rmtree(entry)
        if not entry.exists():
            tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                build(tmp)  # raises on non-finite results: nothing below runs then
                (tmp / MANIFEST).write_text(json.dumps({"files": _file_hashes(tmp)}, indent=1))
                os.replace(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return load(entry)
