"""save: write local models, and what is attached to them, to an OCI image layout tar, streaming.

Every blob is streamed into the tar (never a whole blob in memory) and hashed on the way, so a corrupt local blob
is reported instead of exported. The blobs are what the store's graph walk reaches from the named models.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from modelctl import atomic
from modelctl import digest as _digest
from modelctl.config import Config
from modelctl.errors import DigestMismatch, IntegrityError, UsageError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services.archive.result import ArchivedModel, ArchiveResult, Progress
from modelctl.store import LAYOUT_VERSION, Layout
from modelctl.store import models as local


def save(config: Config, texts: Iterable[str], out: BinaryIO, *, progress: Progress | None = None) -> ArchiveResult:
    """Write the models ``texts`` name (with their referrers) to ``out`` as an OCI layout tar, streaming."""
    store = local.layout(config)
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
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", LAYOUT_VERSION)
        _add_bytes(tar, "index.json", index_bytes)
        _add_dir(tar, "blobs/")
        for algorithm in sorted({_digest.SHA256, *(desc.digest.algorithm for desc in order)}):
            _add_dir(tar, f"blobs/{algorithm}/")
        for desc in order:
            total += _add_blob(tar, store, desc)
            if progress is not None:
                progress(desc.digest, desc.size)
    return ArchiveResult(models=tuple(models), referrers=referrer_count, blobs=len(order), bytes=total)


def save_to_path(
    config: Config, texts: Iterable[str], path: Path, *, progress: Progress | None = None
) -> ArchiveResult:
    """``save`` into a file: written beside it under a temporary name, renamed into place when complete."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint=f"give -o a file name, e.g. -o {path / 'models.tar'}")
    if not path.parent.is_dir():
        raise UsageError(
            f"directory {path.parent} does not exist", hint="create it, or give -o a path in an existing one"
        )
    with atomic.replacing(path) as f:
        return save(config, texts, f, progress=progress)


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
