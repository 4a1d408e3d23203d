"""Replacing a file so that readers see the old content or the new, never a torn one, and a crash loses neither.

One place for the sequence every writer of a small state file needs (the store's index and journal, the registry
server's links and tags, the Docker credentials file, ``modelctl save -o``): a temp file on the same filesystem,
flushed and fsynced, renamed over the target, the directory fsynced; the temp file removed again if anything fails.
Large downloads do not come here: see ``modelctl.store.journal``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def is_temp(name: str) -> bool:
    """Whether a directory entry is a temp file of :func:`replacing` (a listing must skip it)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextmanager
def replacing(target: Path, *, tmp_dir: Path | None = None, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file that replaces ``target`` when the block ends without an error.

    ``tmp_dir`` holds the temp file (default: beside ``target``; it must be on the same filesystem). ``mode`` is the
    new file's mode before the umask, set when it is created, so a 0o600 file is never readable by others.
    """
    directory = tmp_dir if tmp_dir is not None else target.parent
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write(target: Path, data: bytes, *, tmp_dir: Path | None = None) -> None:
    """Replace ``target`` with ``data`` durably: the file and the directory entry both reach the disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target, tmp_dir=tmp_dir) as f:
        f.write(data)
    fsync_dir(target.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
