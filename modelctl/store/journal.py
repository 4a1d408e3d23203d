"""The journal of unflushed blobs: committed without waiting for the disk, and known to be at risk until they are.

Why: fsyncing a pulled blob costs more than downloading and verifying it (a durable 2 GiB write takes ~6.9 s on the
CI disk, the verified download ~3 s). Skipping it is safe as long as we remember what was skipped. A ``kill -9``
never loses page-cache data; only a kernel crash or power loss can, and both give Linux a new boot id. So a blob
committed without a flush is listed, with the boot id, in the store's ``.unflushed.json`` (a dotfile: OCI tools
ignore it, like ``.lock`` and ``.tmp/``) before its rename. :func:`recover` re-hashes the entries of another boot,
and fsyncs and drops those of this boot once the kernel has had time to write them back.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelctl import digest as _digest
from modelctl.atomic import fsync_dir, fsync_file
from modelctl.digest import Digest
from modelctl.errors import IntegrityError


class Blobs(Protocol):
    """What the journal needs of the blob store (``store.blobs.Blobs``, which calls the journal itself)."""

    @property
    def root(self) -> Path: ...

    @property
    def blobs_dir(self) -> Path: ...

    def locked(self) -> AbstractContextManager[None]: ...

    def write_atomic(self, target: Path, data: bytes) -> None: ...

    def blob_path(self, digest: Digest) -> Path: ...

    def has_blob(self, digest: Digest, size: int | None = None) -> bool: ...


BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
"""Read at each call (tests point it at a file of their own)."""
JOURNAL = ".unflushed.json"
SETTLE_SECONDS = 300.0
"""Age after which an entry of this boot is fsynced and dropped: the kernel writes dirty pages back after ~30 s,
so by then the fsync is cheap."""
HASH_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    """A blob renamed into ``blobs/`` without an fsync of its data."""

    digest: Digest
    boot: str
    time: float
    """Commit time, unix seconds."""
    size: int
    """Its size at commit: a crash that lost its tail is found without hashing it."""


def boot_id(path: Path | None = None) -> str | None:
    """This boot's id (it changes on every boot, so after every kernel crash or power loss); None off Linux."""
    try:
        text = (path or BOOT_ID_PATH).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def load(root: Path) -> list[Entry] | None:
    """The journal's entries; None when there is no journal (one failed open: the common case costs nothing).

    An unparseable journal reads as empty, so the caller deletes it rather than failing every command. A deliberate
    choice, not an oversight: we do not treat every blob as suspect (re-hashing the whole store). The journal is only
    ever replaced atomically after an fsync, so a crash cannot tear it; an unparseable one was damaged by something
    else (a bad disk, a hand edit), which this journal does not try to survive.
    """
    try:
        raw = (root / JOURNAL).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        doc = json.loads(raw)
        entries = [Entry(Digest(e["digest"]), str(e["boot"]), float(e["time"]), int(e["size"])) for e in doc["blobs"]]
    except (ValueError, TypeError, KeyError, AttributeError, IntegrityError):
        return []
    return entries if all(e.size >= 0 for e in entries) else []


def dump(entries: list[Entry]) -> bytes:
    blobs = [{"digest": e.digest, "boot": e.boot, "time": e.time, "size": e.size} for e in entries]
    return json.dumps({"blobs": blobs}, separators=(",", ":")).encode()


def settled(entry: Entry, boot: str | None, now: float) -> bool:
    """Whether an entry of this boot is old enough to fsync and drop (a clock that went back counts as old)."""
    return entry.boot == boot and not 0 <= now - entry.time < SETTLE_SECONDS


def suspect(entry: Entry, boot: str | None) -> bool:
    """Whether the entry comes from another boot (or this boot is unknown): its bytes may be lost, re-verify."""
    return boot is None or entry.boot != boot


def intact(path: Path, entry: Entry) -> bool:
    """Whether the blob file still has the size and digest it was committed with (streamed, 8 MiB reads)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size != entry.size:
            return False
        return _digest.of_file(f, HASH_CHUNK, entry.digest.algorithm) == entry.digest


def record(store: Blobs, digest: Digest, boot: str, size: int) -> None:
    """List a blob about to be renamed in unflushed, durably; the caller holds the store's lock."""
    entries = [e for e in load(store.root) or [] if e.digest != digest]
    entries.append(Entry(digest, boot, time.time(), size))
    store.write_atomic(store.root / JOURNAL, dump(entries))


def recover(store: Blobs) -> list[Digest]:
    """Settle the journal of unflushed blobs; return the digests of blobs deleted as damaged by a crash.

    Without a journal it costs one failed open and no lock; with only young entries of this boot, a read, a stat per
    entry and no lock. Otherwise, under the lock: entries of another boot are re-hashed and their blob deleted if its
    size or digest is wrong; entries of this boot older than ``SETTLE_SECONDS`` are fsynced; both are dropped, and so
    are entries whose blob is gone (which is how ``remove`` and ``prune`` clean up after themselves: they leave the
    journal alone).
    """
    entries = load(store.root)
    if entries is None:
        return []
    boot, now = boot_id(), time.time()

    def due(e: Entry) -> bool:
        return suspect(e, boot) or settled(e, boot, now) or not store.has_blob(e.digest)

    if entries and not any(due(e) for e in entries):
        return []
    removed: list[Digest] = []
    with store.locked():
        kept: list[Entry] = []
        for entry in load(store.root) or []:
            path = store.blob_path(entry.digest)
            try:
                if suspect(entry, boot):
                    if not intact(path, entry):
                        path.unlink()
                        removed.append(entry.digest)
                elif settled(entry, boot, now):
                    fsync_file(path)
                else:
                    path.stat()
                    kept.append(entry)
            except (FileNotFoundError, NotADirectoryError):
                continue
        for algorithm in sorted({d.algorithm for d in removed}):
            fsync_dir(store.blobs_dir / algorithm)
        if kept:
            store.write_atomic(store.root / JOURNAL, dump(kept))
        else:
            (store.root / JOURNAL).unlink(missing_ok=True)
    return removed
