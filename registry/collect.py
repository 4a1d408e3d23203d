"""Garbage collection: mark every blob a stored manifest references, sweep the rest of the shared blob store.

Like distribution's ``garbage-collect``, run it while no push is in flight (a blob uploaded but not yet
named by a manifest is unreferenced); ``grace_seconds`` keeps blobs younger than that whatever their state.
Stale uploads (no write for a day) are removed too, and so are the temp files of atomic writes that a killed server
left behind (never served: nothing names them, but they hold disk).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Final

from modelctl import atomic
from modelctl.digest import Digest
from registry import manifests
from registry.storage import Storage

STALE_UPLOAD_S: Final = 24 * 3600.0
STALE_TEMP_S: Final = 3600.0
"""An atomic write's temp file takes milliseconds (a blob's commit seconds); one this old belongs to a dead server."""


def _mark(storage: Storage) -> set[Digest]:
    marked: set[Digest] = set()
    todo = [digest for _, digest in storage.iter_revisions()]
    while todo:
        digest = todo.pop()
        if digest in marked:
            continue
        marked.add(digest)
        try:
            raw = storage.blob_path(digest).read_bytes()
        except FileNotFoundError:
            continue
        if len(raw) <= manifests.MAX_MANIFEST_BYTES:
            # Index children are manifests: follow them so their layers stay too.
            todo.extend(d for d in manifests.references(raw) if d not in marked)
    return marked


def gc(root: Path, *, grace_seconds: float = 0.0, dry_run: bool = False) -> list[Digest]:
    """Remove blobs no manifest references (and their repository links); returns their digests, sorted."""
    if not (root / "blobs").is_dir():
        raise FileNotFoundError(f"{root} is not a registry root (no blobs/ directory)")
    storage = Storage(root)
    marked = _mark(storage)
    now = time.time()
    removed: list[Digest] = []
    for digest, path in list(storage.iter_blobs()):
        if digest in marked:
            continue
        try:
            if now - path.stat().st_mtime < grace_seconds:
                continue
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(digest)
    if not dry_run:
        gone = set(removed)
        for _, digest, link in list(storage.iter_layer_links()):
            if digest in gone or not storage.has_blob(digest):
                link.unlink(missing_ok=True)
        for upload in os.listdir(storage.uploads_dir):
            d = storage.uploads_dir / upload
            try:
                idle = now - max(p.stat().st_mtime for p in (d, *d.iterdir()))
            except (FileNotFoundError, NotADirectoryError, ValueError):
                continue
            if idle > STALE_UPLOAD_S:
                shutil.rmtree(d, ignore_errors=True)
        _sweep_temp_files(root, now)
    return sorted(removed)


def _sweep_temp_files(root: Path, now: float) -> None:
    """Remove ``.<name>.<pid>.<hex>.tmp`` files (``modelctl.atomic``'s) older than :data:`STALE_TEMP_S`."""
    for directory, _, files in os.walk(root):
        for name in files:
            if not (name.startswith(".") and name.endswith(atomic.TEMP_SUFFIX)):
                continue
            path = Path(directory, name)
            try:
                if now - path.lstat().st_mtime > STALE_TEMP_S:
                    path.unlink()
            except FileNotFoundError:
                continue
