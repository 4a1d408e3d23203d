"""Replacing a file so that readers see the old content or the new, never a torn one, and a crash loses neither.

One place for the sequence every writer of a small state file needs (the store's index and journal, the Docker
credentials file, ``modelctl save -o``): a temp file on the same filesystem, flushed and fsynced, renamed over the
target; removed again if anything fails. Large downloads do not come here: see ``modelctl.store.journal``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replacing(target: Path, *, tmp_dir: Path | None = None, mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file that replaces ``target`` when the block ends without an error.

    ``tmp_dir`` holds the temp file (default: beside ``target``; it must be on the same filesystem). ``mode`` is the
    new file's mode before the umask, set when it is created, so a 0o600 file is never readable by others.
    """
    directory = tmp_dir if tmp_dir is not None else target.parent
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
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
