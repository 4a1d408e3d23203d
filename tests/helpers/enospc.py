"""Run ``modelctl`` on a disk that fills up, where no small filesystem can be mounted (not root): an injected ENOSPC.

    python tests/helpers/enospc.py CONTROL DIR -- pull ai/x:1

``CONTROL`` is a file holding how many bytes this process may still write under ``DIR`` (re-read at every write,
so a test can "fill the disk" while the command runs by writing 0 into it). What is injected: only the error, raised
by Python's own write calls before they write (``os.write``, ``os.pwrite``, ``os.posix_fallocate``, and files opened
with ``open``/``io.open``/``os.fdopen``, which is how modelctl writes every file), and the free space
``shutil.disk_usage`` reports under ``DIR``. What is real: the CLI process, its files, its servers, its exit.
Writes into a file that ``posix_fallocate`` reserved cost nothing, as on a real filesystem.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import runpy
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_reserved: set[str] = set()
_used = 0


def _path(target: int | str | os.PathLike[str]) -> str:
    if isinstance(target, int):
        try:
            return os.readlink(f"/proc/self/fd/{target}")
        except OSError:
            return ""
    return os.path.abspath(os.fspath(target))


def _left() -> int:
    try:
        return int(Path(CONTROL).read_text().strip() or 0)
    except (OSError, ValueError):
        return 1 << 62


def _charge(target: int | str | os.PathLike[str], n: int, *, reserve: bool = False) -> None:
    global _used
    path = _path(target)
    if not path.startswith(DIR) or (path in _reserved and not reserve):
        return
    with _lock:
        if n > _left() - _used:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        _used += n
        if reserve:
            _reserved.add(path)


_write, _pwrite, _fallocate, _open, _fdopen, _disk_usage = (
    os.write,
    os.pwrite,
    os.posix_fallocate,
    io.open,
    os.fdopen,
    shutil.disk_usage,
)


def write(fd: int, data: Any) -> int:
    _charge(fd, len(data))
    return _write(fd, data)


def pwrite(fd: int, data: Any, offset: int) -> int:
    _charge(fd, len(data))
    return _pwrite(fd, data, offset)


def posix_fallocate(fd: int, offset: int, length: int) -> None:
    _charge(fd, length, reserve=True)
    _fallocate(fd, offset, length)


class _FileIO(io.FileIO):
    def write(self, data: Any) -> int:
        _charge(self.fileno(), len(memoryview(data).cast("B")))
        return super().write(data)


def open_(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None, errors: str | None = None,
          newline: str | None = None, closefd: bool = True, opener: Any = None) -> Any:
    """``io.open`` whose writable files go through :class:`_FileIO` (the same layers io.open builds)."""
    if not any(c in mode for c in "wax+"):
        return _open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    raw = _FileIO(file, mode.replace("b", "").replace("t", ""), closefd=closefd, opener=opener)
    if buffering == 0:
        return raw
    size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
    buffered: Any = (io.BufferedRandom if "+" in mode else io.BufferedWriter)(raw, size)
    if "b" in mode:
        return buffered
    return io.TextIOWrapper(buffered, encoding, errors, newline, line_buffering=buffering == 1)


def fdopen(fd: int, mode: str = "r", buffering: int = -1, *args: Any, **kwargs: Any) -> Any:
    return open_(fd, mode, buffering, *args, **kwargs)


def disk_usage(path: Any) -> Any:
    real = _disk_usage(path)
    if not _path(path).startswith(DIR):
        return real
    left = max(0, _left() - _used)
    return type(real)(real.total, real.total - left, left)


if __name__ == "__main__":
    CONTROL, DIR, dashes, *args = sys.argv[1:]
    assert dashes == "--", __doc__
    DIR = os.path.abspath(DIR)
    os.write, os.pwrite, os.posix_fallocate, os.fdopen = write, pwrite, posix_fallocate, fdopen
    io.open = builtins.open = open_
    shutil.disk_usage = disk_usage
    sys.argv = ["modelctl", *args]
    runpy.run_module("modelctl", run_name="__main__", alter_sys=True)
