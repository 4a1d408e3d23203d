"""save: write local models, and what is attached to them, to an OCI image layout tar, streaming.

Every blob is streamed into the tar (never a whole blob in memory) and hashed on the way, so a corrupt local blob
is reported instead of exported. The blobs are what the store's graph walk reaches from the named models.

Ctrl-C, SIGTERM or a full disk half-way: ``-o FILE`` removes its temp file (FILE is never half-written) and says
how much was written (``Interrupted``) or how much more room the archive needs (``NoSpace``); on standard output
the bytes already written are the reader's, and the message says the archive there is incomplete.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from modelctl import atomic
from modelctl import digest as _digest
from modelctl.config import Config
from modelctl.errors import INTERRUPTS, DigestMismatch, IntegrityError, Interrupted, NoSpace, UsageError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services.archive.counted import Counted
from modelctl.services.archive.result import ArchivedModel, ArchiveResult, Progress
from modelctl.store import LAYOUT_VERSION, Layout
from modelctl.store import models as local

TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK


@dataclass(frozen=True, kw_only=True, slots=True)
class _Plan:
    """What an archive will hold, decided before a byte is written."""

    models: list[ArchivedModel]
    order: list[Descriptor]
    """Every blob, manifests first, once."""
    index: bytes
    referrers: int

    @property
    def size(self) -> int:
        """The tar's size (headers, padding, end blocks; blobs of 8 GiB or more add a PAX header or two)."""

        def member(n: int) -> int:
            return TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK + (3 * TAR_BLOCK if n >= 8 << 30 else 0)

        algorithms = {_digest.SHA256, *(d.digest.algorithm for d in self.order)}
        body = member(len(LAYOUT_VERSION)) + member(len(self.index)) + (1 + len(algorithms)) * TAR_BLOCK
        body += sum(member(d.size) for d in self.order) + 2 * TAR_BLOCK
        return -(-body // TAR_RECORD) * TAR_RECORD


def save(config: Config, texts: Iterable[str], out: BinaryIO, *, progress: Progress | None = None) -> ArchiveResult:
    """Write the models ``texts`` name (with their referrers) to ``out`` as an OCI layout tar, streaming.

    An interrupt raises Interrupted, a full disk NoSpace, both saying that the archive on ``out`` is incomplete."""
    store = local.layout(config)
    work = _plan(store, texts)
    counted = Counted(out)
    where = _describe(out)
    try:
        return _write(store, work, counted, progress)
    except INTERRUPTS as exc:
        line = f"interrupted: {counted.count} of {work.size} bytes of the archive written to {where}, which is"
        raise Interrupted.by(exc, f"{line} incomplete; run the same command to save it again") from None
    except OSError as exc:
        if not atomic.disk_full(exc):
            raise
        raise NoSpace(
            f"no space left on {where} after {counted.count} of {work.size} bytes of the archive",
            hint=f"the archive there is incomplete; write it where {atomic.human(work.size)} is free (-o FILE)",
            needed=work.size - counted.count,
        ) from exc


def _describe(out: BinaryIO) -> str:
    """What ``out`` is, for a message: "the standard output (/dev/full)", "the standard output (a pipe)", a path."""
    try:
        fd = out.fileno()
        target = os.readlink(f"/proc/self/fd/{fd}")
    except (OSError, ValueError, AttributeError):
        return "the output"
    if target.startswith("pipe:"):
        target = "a pipe"
    return f"the standard output ({target})" if fd == 1 else target


def _plan(store: Layout, texts: Iterable[str]) -> _Plan:
    """The models ``texts`` name, the blobs the graph walk reaches from them, and the archive's index.json."""
    names = list(texts)
    if not names:
        raise UsageError("name at least one model to save")
    models: list[ArchivedModel] = []
    index: list[dict[str, Any]] = []
    roots: list[Descriptor] = []
    tagged: set[str] = set()
    for text in names:
        entry = local.resolve(store, text)
        if entry.name in tagged:
            continue
        tagged.add(entry.name)
        models.append(ArchivedModel(reference=entry.name, digest=entry.desc.digest))
        roots.append(entry.desc)
        index.append(
            Descriptor(
                media_type=entry.desc.media_type,
                digest=entry.desc.digest,
                size=entry.desc.size,
                annotations={mt.REF_NAME: entry.name},
            ).to_json()
        )
    order: list[Descriptor] = []  # every blob, manifests first, once
    referrer_count = 0
    for step in store.walk(roots):
        order.append(step.desc)
        if step.referrer:
            referrer_count += 1
            index.append(step.desc.to_json())
    index_bytes = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index}, separators=(",", ":")
    ).encode()
    return _Plan(models=models, order=order, index=index_bytes, referrers=referrer_count)


def _write(store: Layout, work: _Plan, out: Counted, progress: Progress | None) -> ArchiveResult:
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        try:
            _add_bytes(tar, "oci-layout", LAYOUT_VERSION)
            _add_bytes(tar, "index.json", work.index)
            _add_dir(tar, "blobs/")
            for algorithm in sorted({_digest.SHA256, *(desc.digest.algorithm for desc in work.order)}):
                _add_dir(tar, f"blobs/{algorithm}/")
            for desc in work.order:
                total += _add_blob(tar, store, desc)
                if progress is not None:
                    progress(desc.digest, desc.size)
        except BaseException:
            out.abandon()  # before tarfile's exit flushes its buffer into a pipe that may never drain
            raise
    return ArchiveResult(models=tuple(work.models), referrers=work.referrers, blobs=len(work.order), bytes=total)


def save_to_path(
    config: Config, texts: Iterable[str], path: Path, *, progress: Progress | None = None
) -> ArchiveResult:
    """``save`` into a file: written beside it under a temporary name, renamed into place when complete.

    An interrupt or a full disk removes the temporary file (``path`` is untouched) before raising Interrupted or
    NoSpace (which says how much more room the whole archive needs in ``path``'s directory)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint=f"give -o a file name, e.g. -o {path / 'models.tar'}")
    if not path.parent.is_dir():
        raise UsageError(
            f"directory {path.parent} does not exist", hint="create it, or give -o a path in an existing one"
        )
    store = local.layout(config)
    work = _plan(store, texts)
    counted: Counted | None = None
    try:
        with atomic.replacing(path) as f:
            counted = Counted(f)
            return _write(store, work, counted, progress)
    except INTERRUPTS as exc:
        written = counted.count if counted else 0
        line = f"interrupted: {written} of {work.size} bytes of the archive written, {path} not created"
        raise Interrupted.by(exc, f"{line} (the partial file was removed); run the same command to save it") from None
    except OSError as exc:
        if not atomic.disk_full(exc):
            raise
        hint = f"free some space there or write the archive elsewhere (-o FILE); {path} was not created"
        raise atomic.no_space(path.parent, work.size, "the archive", hint=hint) from exc


def _tarinfo(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_tarinfo(name.rstrip("/"), 0, directory=True))


def _add_blob(tar: tarfile.TarFile, store: Layout, desc: Descriptor) -> int:
    path = store.blob_path(desc.digest)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise IntegrityError(
            f"blob {desc.digest} is missing from the local store",
            hint="pull the model again, then save it",
        ) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != desc.size:
            raise IntegrityError(
                f"stored blob {desc.digest} is {size} bytes, its descriptor says {desc.size}",
                hint="the local copy is corrupt; remove the model and pull it again",
            )
        hashing = _digest.Hashing(desc.digest.algorithm)  # tarfile copies the blob with read()
        tar.addfile(_tarinfo(f"blobs/{desc.digest.algorithm}/{desc.digest.hex}", size), hashing.reader(f))
    actual = hashing.digest()
    if hashing.size != size or actual != desc.digest:
        error = DigestMismatch(desc.digest, actual, what=f"stored blob {desc.digest}")
        error.hint = "the local copy is corrupt; remove the model and pull it again (the archive is incomplete)"
        raise error
    return size
