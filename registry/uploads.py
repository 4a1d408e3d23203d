"""Blob upload sessions: bodies streamed to disk and hashed as they arrive, published only once verified.

An upload lives in ``ROOT/uploads/<id>/`` until its digest is checked; then its file is fsynced and renamed
into the shared blob store. Each append is all-or-nothing: a failed or short request is rolled back (file
truncated, hash state restored), so the upload's size is always the number of bytes acknowledged. The hash
state lives in memory; after a restart the session is re-read from disk and hashed once at completion.

A session hashes with one algorithm: the one the POST named (``?digest=`` of a monolithic upload, a proxied
blob's digest), else sha256. Its final PUT may name sha512 only then; such an upload is re-hashed once from the
staged file at completion. That is cheaper than hashing every upload with both algorithms while receiving: the
dual hash would cost a sha512 pass over every byte of every (overwhelmingly sha256) upload, the re-hash costs one
read of the staged file (mostly from the page cache) for the rare sha512 session upload only. Either is correct:
the published digest is always computed from the bytes, with the algorithm the PUT names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp

from modelctl import atomic
from modelctl import digest as _digest
from modelctl.digest import Digest
from registry import names
from registry.errors import RegistryHTTPError
from registry.storage import Storage

if TYPE_CHECKING:
    from hashlib import _Hash as Hasher

_FLUSH_BYTES: Final = 2 * 1024 * 1024
_MAX_IOVECS: Final = 512
_HASH_BLOCK: Final = 4 * 1024 * 1024


@dataclass(eq=False, slots=True)
class Upload:
    id: str
    name: str
    dir: Path
    offset: int = 0
    hasher: Hasher | None = None
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def location(self) -> str:
        return f"/v2/{self.name}/blobs/uploads/{self.id}"

    @property
    def range_header(self) -> str:
        """The spec's ``Range: 0-<last byte>`` (``0-0`` for an empty upload, as distribution answers)."""
        return f"0-{max(self.offset - 1, 0)}"


def write_hashed(fd: int, hasher: Hasher | None, chunks: list[bytes]) -> None:
    """Hash and append ``chunks`` (runs in a worker thread; hashlib releases the GIL on large buffers)."""
    if hasher is not None:
        for chunk in chunks:
            hasher.update(chunk)
    total = sum(len(c) for c in chunks)
    written = os.writev(fd, chunks) if len(chunks) <= _MAX_IOVECS else 0
    if written < total:
        view = memoryview(b"".join(chunks))[written:]
        while view:
            view = view[os.write(fd, view) :]


def _hash_file(path: Path, algorithm: str) -> Digest:
    with open(path, "rb", buffering=0) as f:
        return _digest.of_file(f, _HASH_BLOCK, algorithm)


class Uploads:
    """The upload sessions of one storage root."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._sessions: dict[str, Upload] = {}

    def create(self, name: str, algorithm: str = names.STORED_ALGORITHM) -> Upload:
        """A new session of ``name`` hashing with ``algorithm`` as bytes arrive (see the module docstring)."""
        upload_id = uuid.uuid4().hex
        d = self.storage.uploads_dir / upload_id
        d.mkdir()
        (d / "repository").write_text(name)
        (d / "data").touch()
        upload = Upload(id=upload_id, name=name, dir=d, hasher=_digest.new_hasher(algorithm))
        self._sessions[upload_id] = upload
        return upload

    def get(self, name: str, upload_id: str) -> Upload:
        """The live session ``upload_id`` of repository ``name`` (reloaded from disk after a restart)."""
        if not names.is_upload_id(upload_id):
            raise RegistryHTTPError("BLOB_UPLOAD_UNKNOWN", detail={"upload": upload_id[:100]})
        upload = self._sessions.get(upload_id)
        if upload is None:
            d = self.storage.uploads_dir / upload_id
            try:
                owner = (d / "repository").read_text()
                size = (d / "data").stat().st_size
            except (FileNotFoundError, NotADirectoryError):
                raise RegistryHTTPError("BLOB_UPLOAD_UNKNOWN", detail={"upload": upload_id}) from None
            upload = Upload(id=upload_id, name=owner, dir=d, offset=size)
            self._sessions[upload_id] = upload
        if upload.name != name or upload.done:
            raise RegistryHTTPError("BLOB_UPLOAD_UNKNOWN", detail={"upload": upload_id})
        return upload

    async def append(self, upload: Upload, stream: aiohttp.StreamReader, *, expected: int | None) -> int:
        """Stream ``stream`` onto the end of ``upload``; returns the bytes added. Rolled back on any failure,
        and when ``expected`` is given and the body is not exactly that long (SIZE_INVALID)."""
        loop = asyncio.get_running_loop()
        start, saved = upload.offset, (upload.hasher.copy() if upload.hasher else None)
        fd = os.open(upload.data, os.O_WRONLY | os.O_APPEND)
        pending: asyncio.Future[None] | None = None
        received = 0
        try:
            chunks: list[bytes] = []
            buffered = 0
            async for chunk in stream.iter_any():
                received += len(chunk)
                if expected is not None and received > expected:
                    raise RegistryHTTPError("SIZE_INVALID", "request body longer than declared")
                chunks.append(chunk)
                buffered += len(chunk)
                if buffered >= _FLUSH_BYTES:
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, write_hashed, fd, upload.hasher, chunks)
                    chunks, buffered = [], 0
            if pending is not None:
                await pending
                pending = None
            if chunks:
                await loop.run_in_executor(None, write_hashed, fd, upload.hasher, chunks)
            if expected is not None and received != expected:
                raise RegistryHTTPError("SIZE_INVALID", f"request body has {received} bytes, declared {expected}")
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            os.ftruncate(fd, start)
            upload.hasher = saved
            raise
        finally:
            os.close(fd)
        upload.offset = start + received
        return received

    async def complete(self, upload: Upload, digest: Digest) -> None:
        """Verify ``digest``, publish the blob and link it into the upload's repository; the session ends.
        On a mismatch nothing is stored and DIGEST_INVALID is raised."""
        upload.done = True  # from here on the session is over, whatever the outcome
        self._sessions.pop(upload.id, None)
        await asyncio.get_running_loop().run_in_executor(None, self._publish, upload, digest)

    def _publish(self, upload: Upload, digest: Digest) -> None:
        """Runs in a worker thread: hashing a reloaded session, fsync and rename may take a while."""
        if upload.hasher is not None and upload.hasher.name == digest.algorithm:
            actual = _digest.of_hasher(upload.hasher)
        else:  # reloaded after a restart, or the PUT names another algorithm than the session hashed with
            actual = _hash_file(upload.data, digest.algorithm)
        try:
            if actual != digest:
                raise RegistryHTTPError(
                    "DIGEST_INVALID", detail={"expected": digest, "actual": actual, "size": upload.offset}
                )
            target = self.storage.blob_path(digest)
            if not target.exists():
                fd = os.open(upload.data, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(upload.data, target)
                atomic.fsync_dir(target.parent)
            self.storage.link_blob(upload.name, digest)
        finally:
            shutil.rmtree(upload.dir, ignore_errors=True)

    def cancel(self, upload: Upload) -> None:
        self._end(upload)

    def _end(self, upload: Upload) -> None:
        upload.done = True
        self._sessions.pop(upload.id, None)
        shutil.rmtree(upload.dir, ignore_errors=True)
