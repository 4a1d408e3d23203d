"""Checking stored blobs against what their descriptors promise: a cheap size check (one ``stat``), a full re-hash,
and the safe removal of a blob found damaged.

A blob was verified when it entered ``blobs/``; afterwards a bad disk, a stray ``dd`` or a crash can still change
it. Nothing else re-reads a large blob (``run`` maps it, ``path`` hands it to llama.cpp), so this is where damage
is found. The size check is cheap enough to run on every ``run`` and ``pull``; the re-hash reads every byte.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from modelctl.atomic import fsync_dir
from modelctl.digest import Digest, of_hasher
from modelctl.oci.descriptor import Descriptor
from modelctl.store.blobs import Blobs

HASH_CHUNK = 8 << 20

MISSING = "missing"
SIZE = "size"
DIGEST = "digest"
NOT_A_FILE = "not_a_file"

Progress = Callable[[Digest, int, int], None]
"""Called as a blob is hashed (after each read, and once for an empty blob): its digest, its size and the bytes
hashed so far."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One damaged blob: what is wrong with it, and the identity of the file found (to remove only that file)."""

    digest: Digest
    problem: str
    """``missing``, ``size`` (the file's size differs from its descriptor's), ``digest`` or ``not_a_file``."""
    expected_size: int | None = None
    actual_size: int | None = None
    actual_digest: Digest | None = None
    identity: tuple[int, int, int, int] | None = None
    """(device, inode, size, mtime in ns) of the damaged file; None when there is no file."""

    def describe(self) -> str:
        """What is wrong, in a few words: ``the file is 1024 bytes, 4096 expected``."""
        if self.problem == MISSING:
            return "the file is missing"
        if self.problem == NOT_A_FILE:
            return "it is not a regular file"
        if self.problem == SIZE:
            return f"the file is {self.actual_size} bytes, {self.expected_size} expected"
        return f"its content hashes to {self.actual_digest}"

    def to_json(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "problem": self.problem,
            "expected_size": self.expected_size,
            "actual_size": self.actual_size,
            "actual_digest": self.actual_digest,
        }


def size_check(store: Blobs, desc: Descriptor) -> Finding | None:
    """The cheap check: the blob exists, is a regular file and has the descriptor's size (one ``stat``)."""
    try:
        st = store.blob_path(desc.digest).stat()
    except (FileNotFoundError, NotADirectoryError):
        return Finding(digest=desc.digest, problem=MISSING, expected_size=desc.size)
    return _shape(desc.digest, desc.size, st)


def size_checks(store: Blobs, descs: Iterable[Descriptor]) -> list[Finding]:
    """:func:`size_check` of each descriptor, the damaged ones, each digest once."""
    unique = {desc.digest: desc for desc in descs}
    return [finding for desc in unique.values() if (finding := size_check(store, desc)) is not None]


def check(store: Blobs, digest: Digest, expected_size: int | None, progress: Progress | None = None) -> Finding | None:
    """The full check: size first (a wrong size needs no hashing), then every byte hashed with the digest's own
    algorithm. ``expected_size`` None: a blob no descriptor describes (only its content is checked)."""
    try:
        f = store.blob_path(digest).open("rb", buffering=0)
    except (FileNotFoundError, NotADirectoryError):
        return Finding(digest=digest, problem=MISSING, expected_size=expected_size)
    except IsADirectoryError:
        return Finding(digest=digest, problem=NOT_A_FILE, expected_size=expected_size)
    with f:
        st = os.fstat(f.fileno())
        wrong = _shape(digest, expected_size, st)
        if wrong is not None:
            return wrong
        hasher = digest.hasher()
        done = 0
        buffer = bytearray(max(1, min(HASH_CHUNK, st.st_size)))
        view = memoryview(buffer)
        if progress is not None and not st.st_size:
            progress(digest, 0, 0)
        while n := f.readinto(buffer):
            hasher.update(view[:n])
            done += n
            if progress is not None:
                progress(digest, st.st_size, done)
    actual = of_hasher(hasher)
    if actual == digest:
        return None
    return Finding(
        digest=digest,
        problem=DIGEST,
        expected_size=expected_size,
        actual_size=done,
        actual_digest=actual,
        identity=_identity(st),
    )


def discard(store: Blobs, finding: Finding) -> bool:
    """Delete the damaged file ``finding`` describes, under the store's lock, unless it changed since it was checked
    (a concurrent pull may have replaced it with a good copy). True when it was deleted."""
    if finding.identity is None:
        return False
    path = store.blob_path(finding.digest)
    with store.locked():
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        if _identity(st) != finding.identity or stat.S_ISDIR(st.st_mode):
            return False
        path.unlink()
        fsync_dir(path.parent)
    return True


def _shape(digest: Digest, expected_size: int | None, st: os.stat_result) -> Finding | None:
    if not stat.S_ISREG(st.st_mode):
        return Finding(digest=digest, problem=NOT_A_FILE, expected_size=expected_size, identity=_identity(st))
    if expected_size is not None and st.st_size != expected_size:
        return Finding(
            digest=digest,
            problem=SIZE,
            expected_size=expected_size,
            actual_size=st.st_size,
            identity=_identity(st),
        )
    return None


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def recheck(
    store: Blobs,
    layers: Iterable[Descriptor],
    warn: Callable[[str], None],
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> bool:
    """A pull's look at the layers it already has: each one's size (a ``stat``) and, with ``full``, its content.

    A layer of the wrong size is reported (the pull fetches it again: it is not a finished download); one whose
    content is damaged is reported and removed, for the same reason. True when a layer was removed.
    """
    removed = False
    for desc in {d.digest: d for d in layers}.values():
        finding = size_check(store, desc)
        if finding is None and full:
            finding = check(store, desc.digest, desc.size, progress)
        if finding is None or finding.problem == MISSING:
            continue
        warn(f"the local copy of blob {desc.digest} is damaged ({finding.describe()}): fetching it again")
        if finding.problem == DIGEST:
            removed = discard(store, finding) or removed
    return removed
