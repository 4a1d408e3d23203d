"""Blobs: content-addressed files under ``blobs/<algorithm>/``, entering only by rename once verified."""

from __future__ import annotations

import os
from pathlib import Path

from modelctl import digest as _digest
from modelctl.atomic import fsync_dir, fsync_file
from modelctl.digest import Digest
from modelctl.errors import DigestMismatch, IntegrityError, NotFound
from modelctl.store import journal
from modelctl.store.directory import DEFAULT_ALGORITHM, Directory, is_regular, stored


class Blobs(Directory):
    """Reading, writing and committing blobs (a layout's content)."""

    def blob_path(self, digest: Digest) -> Path:
        """Where a blob lives; a malformed (maybe hostile) digest raises IntegrityError, never a path."""
        parsed = stored(digest)
        return self.blobs_dir / parsed.algorithm / parsed.hex

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return is_regular(st.st_mode) and (size is None or st.st_size == size)

    def read_blob(self, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        """A small blob's verified bytes. A corrupt blob is deleted (a pull fetches it again) and reported."""
        digest = stored(digest)
        path = self.blob_path(digest)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise IntegrityError(
                        f"blob {digest} is {size} bytes, more than the {max_size} allowed here",
                        hint="the store holds an unexpected file; remove the model and pull it again",
                    )
                data = f.read(max_size + 1)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"blob {digest} is not in the local store", hint="pull the model again") from None
        actual = _digest.of_bytes(data, digest.algorithm)
        if actual != digest:
            error = DigestMismatch(digest, actual, what=f"stored blob {digest}")
            try:
                path.unlink(missing_ok=True)
                error.hint = "the local copy was corrupt and has been removed; pull the model again"
            except OSError:
                error.hint = f"the local copy is corrupt; delete {path} and pull the model again"
            raise error
        return data

    def write_blob(self, data: bytes, digest: Digest | None = None) -> Digest:
        """Store ``data`` (verified against ``digest`` when given, named by its sha256 otherwise); its digest."""
        expected = stored(digest) if digest is not None else None
        actual = _digest.of_bytes(data, expected.algorithm if expected is not None else DEFAULT_ALGORITHM)
        if expected is not None and actual != expected:
            raise DigestMismatch(expected, actual, what="blob")
        self.ensure()
        target = self.blob_path(actual)
        self._ensure_parent(target)
        self.write_atomic(target, data)
        return actual

    def commit_blob(self, path: Path, digest: Digest, *, flush: bool = True) -> Path:
        """Move an already-verified file (same filesystem, e.g. from ingest/) into ``blobs/`` atomically.

        ``flush=False`` skips the fsync of the data (it costs more than a fast download): the blob is first listed
        in the journal of unflushed blobs, durably, then renamed. Without a boot id (not Linux) it flushes anyway.
        """
        target = self.blob_path(digest)
        self.ensure()
        self._ensure_parent(target)
        boot = None if flush else journal.boot_id()
        if boot is None:
            fsync_file(path)
            self._move_in(path, target)
            return target
        with self.locked():
            journal.record(self, digest, boot, os.stat(path).st_size)
            self._move_in(path, target)
        return target

    def recover_unflushed(self) -> list[Digest]:
        """Settle the journal of unflushed blobs; return the digests of blobs deleted as damaged by a crash.

        Call it when the store is opened, before any blob is used (see :func:`modelctl.store.journal.recover`).
        """
        return journal.recover(self)

    def _ensure_parent(self, target: Path) -> None:
        """Create ``blobs/<algorithm>/`` for a first blob of an algorithm other than sha256, durably."""
        if not target.parent.is_dir():
            target.parent.mkdir(exist_ok=True)
            fsync_dir(self.blobs_dir)

    def _move_in(self, path: Path, target: Path) -> None:
        os.utime(path)  # prune() measures a blob's age from its arrival in blobs/, not its last write
        os.replace(path, target)
        fsync_dir(target.parent)
