"""Unpacking: the one file a model image's tar layer holds, copied out of the stored layer for llama.cpp to load.

llama.cpp opens a GGUF by path and maps it from offset 0, so a file inside a tar blob cannot be loaded where it
lies: it is copied once into the model's directory (``models/<manifest hex>/``) beside the links to the other
layers, and the stored layer stays as it is (push, save and verify keep working on the blob the registry named).
An image-format model therefore takes twice its size on disk here; ``docker`` and ``modelpack`` artifacts do not.

Everything in the layer is untrusted: only the member the manifest names (``models/<file path>``) is read, and it
must be a plain file; no name from the archive ever becomes a path (the destination comes from the checked
annotation); members are counted and pax headers bounded; a gzip layer may expand to :data:`MAX_EXPANSION` times
its size at most; and the whole uncompressed stream is hashed and compared with the image config's ``diff_id``
before the copy is renamed into place, so a damaged layer never yields a file.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, Self, cast

from modelctl import atomic
from modelctl.artifact import Packed
from modelctl.digest import COPY_CHUNK, Hashing
from modelctl.errors import DigestMismatch, IntegrityError
from modelctl.store.layout import Layout

MAX_MEMBERS = 10_000
"""Entries a model layer may have (modelctl writes two: ``models/`` and the file)."""
MAX_HEADER = 1 << 20
"""A pax or GNU long-name header larger than this is refused before tarfile reads it into memory."""
MAX_EXPANSION = 64
"""A gzip layer may hold at most this many times its own size (a GGUF hardly compresses; a bomb does)."""
_STAMP = ".{}.unpacked"


def unpack(store: Layout, packed: Packed, target: Path) -> Path:
    """``target``, holding ``packed``'s file: unpacked now, or kept from an earlier unpack of the same layer."""
    if _is_current(packed, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.space_for(target.parent, packed.layer.size, f"unpacking {target.name}"), _partial(target) as tmp:
        _copy_member(store, packed, tmp)
        os.replace(tmp, target)
    st = target.stat()
    _stamp(target).write_text(f"{packed.layer.digest} {st.st_size} {st.st_mtime_ns}\n")
    return target


HEAD_BYTES = 64 << 10
"""What :func:`member_span` needs of a layer's start: the member's headers (a few blocks; pax records included)."""


def member_span(head: bytes, member: str) -> tuple[int, int] | None:
    """Where ``member``'s bytes sit in an uncompressed tar whose first bytes are ``head``: (offset, size), or None
    when its header is not within ``head`` or it is not a plain file. Lets the fit check read a GGUF header
    inside an image layer by ranges, as it reads a raw layer."""
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|", tarinfo=_Header) as tar:
            for count, info in enumerate(tar, start=1):
                if _normal(info.name) == member:
                    return (info.offset_data, info.size) if info.isreg() else None
                if count >= MAX_MEMBERS:
                    return None
    except (tarfile.TarError, EOFError, IntegrityError):
        return None
    return None


def _is_current(packed: Packed, target: Path) -> bool:
    """Whether ``target`` is this layer's unpacked file, untouched since (a stamp beside it records which)."""
    try:
        st = os.lstat(target)
        recorded = _stamp(target).read_text().split()
    except OSError:
        return False
    return not target.is_symlink() and recorded == [packed.layer.digest, str(st.st_size), str(st.st_mtime_ns)]


def _stamp(target: Path) -> Path:
    return target.with_name(_STAMP.format(target.name))


@contextlib.contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """A temp file beside ``target``; removed unless it was renamed into place."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy_member(store: Layout, packed: Packed, out_path: Path) -> None:
    """Stream the layer once: copy the named member to ``out_path``, hash everything, check the diff_id."""
    layer = packed.layer
    where = f"layer {layer.digest}"
    limit = layer.size * MAX_EXPANSION + (1 << 20) if packed.gzip else layer.size
    hashing = Hashing(packed.diff_id.algorithm)
    found = False
    with store.blob_path(layer.digest).open("rb") as raw:
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if packed.gzip else raw
        source = _Bounded(hashing.reader(stream), limit, where)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|", tarinfo=_Header) as tar:
                for count, member in enumerate(tar, start=1):
                    if count > MAX_MEMBERS:
                        raise IntegrityError(f"{where} has more than {MAX_MEMBERS} entries: not a model layer")
                    if _normal(member.name) != packed.member:
                        continue  # another file (a base image's): never read, never written
                    if found:
                        raise IntegrityError(f"{where} holds {packed.member} twice", hint=_HINT)
                    if not member.isreg():
                        raise IntegrityError(f"{where}: {packed.member} is not a plain file", hint=_HINT)
                    _write(tar, member, out_path)
                    found = True
            while source.read(COPY_CHUNK):  # the end-of-archive blocks and padding count in the diff_id too
                pass
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a full disk is not one
            raise IntegrityError(f"{where} is not a readable tar layer ({exc})", hint=_HINT) from None
    actual = hashing.digest()
    if actual != packed.diff_id:
        raise DigestMismatch(packed.diff_id, actual, what=f"the uncompressed {where}")
    if not found:
        raise IntegrityError(f"{where} holds no {packed.member}", hint=_HINT)


_HINT = "the image is malformed or hostile; ask its publisher to package it again"


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, out_path: Path) -> None:
    src = tar.extractfile(member)
    assert src is not None  # a regular file
    with out_path.open("wb") as out:
        copied = 0
        while block := src.read(COPY_CHUNK):
            out.write(block)
            copied += len(block)
    if copied != member.size:
        raise EOFError(f"{member.name} is cut short")
    out_path.chmod(0o644)


def _normal(name: str) -> str:
    """A member name as the manifest spells it: ``/models/x`` and ``./models/x`` are ``models/x``."""
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Bounded:
    """A reader that fails once more than ``limit`` bytes came through (a gzip bomb stops there)."""

    def __init__(self, f: _Readable, limit: int, where: str) -> None:
        self._f = f
        self._left = limit
        self._where = where

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._left -= len(data)
        if self._left < 0:
            raise IntegrityError(f"{self._where} expands past its limit", hint=_HINT)
        return data


class _Header(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header over :data:`MAX_HEADER` bytes before tarfile reads it whole."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _LONG_HEADERS and info.size > MAX_HEADER:
            raise IntegrityError(f"a tar header of {info.size} bytes (the limit is {MAX_HEADER})", hint=_HINT)
        return info


_LONG_HEADERS = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
