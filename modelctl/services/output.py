"""``pull --output DIR``: a stored model's files in a directory, named as its artifact names them.

The route for clusters whose container runtime cannot mount an OCI artifact: an init container runs
``modelctl pull REF --output /models`` into a shared volume. Each file is a hard link to the store's blob where the
file system allows (no copy, no extra space), else a copy checked against its digest as it is written. Names come
from the layers' file-path annotations (``org.cncf.model.filepath``, ``org.opencontainers.image.title``), else the
defaults ``modelctl package`` would give; :func:`modelctl.artifact.file_name` refuses a name that is absolute or
climbs out, and one whose way passes through a symlink out of the directory is refused here, before any file is
placed. Every file is written under a temp name and renamed, so a reader never sees half of one. A hard link shares
its bytes with the store: writing to it changes the store's copy too (``modelctl verify`` finds that).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelctl import artifact, atomic
from modelctl import digest as _digest
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, UsageError
from modelctl.store import Layout, unpack
from modelctl.store import models as local

_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES})
"""Why a hard link may be impossible where a copy works: another file system, one without links, a link limit."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Placed:
    directory: Path
    files: tuple[Path, ...]
    """Every file written, in manifest order."""
    linked: int
    """How many of them are hard links to the store's blobs (the rest are copies)."""

    def to_json(self) -> dict[str, object]:
        return {"directory": str(self.directory), "files": [str(p) for p in self.files], "linked": self.linked}


def check_directory(directory: Path) -> Path:
    """The absolute output directory; UsageError (exit 2) now, before any download, when it cannot be one."""
    target = directory.expanduser().absolute()
    for part in (target, *target.parents):
        if part.is_dir():
            return target
        if part.exists():
            raise UsageError(
                f"--output {directory}: {part} is not a directory",
                hint="give a directory (modelctl creates it when it is missing)",
            )
    return target


def place(config: Config, reference: str, digest: Digest, directory: Path) -> Placed:
    """Put the files of the stored model ``reference`` (whose manifest is ``digest``) in ``directory``."""
    store = local.layout(config)
    found = [d for name, d in store.entries() if name == reference and d.digest == digest]
    if not found:
        raise IntegrityError(f"{reference} changed in the store while it was being pulled", hint="run the pull again")
    model = local.load(store, reference, found[0])
    directory = check_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    planned = [(layer_digest, directory / name, name) for layer_digest, name in file_names(model)]
    for _, target, name in planned:  # every name first: a refusal leaves nothing half-placed
        _check_inside(root, target, name)
    packed = model.model.packed  # a model image's files sit inside tar layers: copied out, never the tar itself
    linked = sum(
        _unpack(store, packed[layer], target) if layer in packed else _put(store, layer, target)
        for layer, target, _ in planned
    )
    return Placed(directory=directory, files=tuple(target for _, target, _ in planned), linked=linked)


def file_names(model: local.LocalModel) -> Iterator[tuple[Digest, str]]:
    """(blob, relative name) of every layer the store holds, in manifest order; the same name twice for two
    different blobs is an IntegrityError (the artifact is ambiguous)."""
    shards = [d.digest for d in model.model.gguf]
    given: dict[str, Digest] = {}
    for index, layer in enumerate(model.manifest.layers):
        if not layer.distributable:
            continue  # never in the store: its bytes live at a foreign URL
        position = shards.index(layer.digest) + 1 if len(shards) > 1 and layer.digest in shards else None
        name = artifact.file_name(layer, index, shards=(position, len(shards)) if position else None)
        if given.setdefault(name, layer.digest) != layer.digest:
            raise IntegrityError(
                f"{model.name} names two different files {name!r}",
                hint="the artifact is ambiguous; ask its publisher to fix the file-path annotations",
            )
        yield layer.digest, name


def _check_inside(root: Path, target: Path, name: str) -> None:
    """Refuse a name whose existing directories (symlinks resolved) lead out of the output directory, or that
    names a directory. Nothing is created here; a symlink in the file's own place is replaced, never followed."""
    if not target.parent.resolve().is_relative_to(root):
        raise IntegrityError(
            f"the file {name!r} would be written outside {root} (a symlink in the output directory leads out)",
            hint="remove the symlink from the output directory, or use an empty one",
        )
    if target.is_dir() and not target.is_symlink():
        raise IntegrityError(f"{target} is a directory, where the model has the file {name!r}", hint="remove it")


def _unpack(store: Layout, packed: artifact.Packed, target: Path) -> int:
    """Copy (0 links) the file a tar layer holds to ``target``, checked against the layer's diff_id."""
    unpack.unpack(store, packed, target)
    return 0


def _put(store: Layout, digest: Digest, target: Path) -> int:
    """Link (1) or copy (0) the blob ``digest`` to ``target``, replacing what is there."""
    blob = store.blob_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_symlink() and os.path.samefile(blob, target):
        return 1
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{atomic.TEMP_SUFFIX}")
    try:
        os.link(blob, tmp)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
    else:
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return 1
    size = blob.stat().st_size
    with (
        atomic.space_for(target.parent, size, f"the copy of {target.name}"),
        blob.open("rb") as src,
        atomic.replacing(target) as out,
    ):
        actual, _ = _digest.copy_hashed(src, out, algorithm=digest.algorithm, chunk=8 << 20)
        if actual != digest:
            raise IntegrityError(
                f"the store's copy of {digest[:19]} is damaged (it hashes to {actual[:19]}); {target} was not written",
                hint="run: modelctl verify --repair",
            )
    return 0
