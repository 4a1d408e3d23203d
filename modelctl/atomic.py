"""Replacing a file so that readers see the old content or the new, never a torn one, and a crash loses neither.

One place for the sequence every writer of a small state file needs (the store's index and journal, the registry
server's links and tags, the Docker credentials file, ``modelctl save -o``): a temp file on the same filesystem,
flushed and fsynced, renamed over the target, the directory fsynced; the temp file removed again if anything fails.
Large downloads do not come here: see ``modelctl.store.journal``.

A full disk is a user's problem, not a crash: every writer turns ENOSPC (and EDQUOT) into ``NoSpace`` (exit 8) naming
the directory and how much more room the whole operation needs, after removing what it had half-written.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelctl.errors import NoSpace

TEMP_SUFFIX = ".tmp"
MIN_ROOM = 1 << 20
"""The least "more" a disk-full error asks for: a write failed, so even small files (state, index) need room."""
SPACE_HINT = "free some space (modelctl prune, modelctl rm) or set MODELCTL_HOME to a larger disk"


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
    """Replace ``target`` with ``data`` durably: the file and the directory entry both reach the disk.

    A full disk raises NoSpace naming ``target``'s directory; ``target`` keeps its old content."""
    with space_for(target.parent, len(data), f"writing {target.name}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing(target, tmp_dir=tmp_dir) as f:
            f.write(data)
        fsync_dir(target.parent)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    """Free bytes for this user on the filesystem holding ``path`` (its nearest existing ancestor)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def no_space(
    directory: Path, needed: int, doing: str, *, hint: str = SPACE_HINT, at_least: bool = False
) -> NoSpace:
    """NoSpace for ``doing`` (e.g. "the pull of ai/x"), which needs ``needed`` bytes in ``directory`` (``at_least``:
    a lower bound, e.g. an archive on a pipe, whose size is unknown).

    Call it after removing what the failed write left behind: "more" is ``needed`` less what is free now, and never
    less than :data:`MIN_ROOM` (the write did fail)."""
    free = free_bytes(directory)
    more = max(needed - free, MIN_ROOM)
    bound = "at least " if at_least or more == MIN_ROOM else ""
    return NoSpace(
        f"not enough disk space in {directory}: {doing} needs {bound}{human(more)} more ({human(free)} free)",
        hint=hint,
        directory=str(directory),
        needed=more,
    )


@contextmanager
def space_for(
    directory: Path, needed: int | Callable[[], int], doing: str, *, hint: str = SPACE_HINT
) -> Iterator[None]:
    """Turn a full disk inside the block into :func:`no_space` (``needed`` may be computed only then)."""
    try:
        yield
    except OSError as exc:
        if not disk_full(exc):
            raise
        need = needed() if callable(needed) else needed
        raise no_space(directory, need, doing, hint=hint) from exc


def human(n: int) -> str:
    """``n`` bytes for a message: 512 B, 3.0 KiB, 21.4 MiB, 1.25 GiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{value:.2f} GiB" if unit == "GiB" else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


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
