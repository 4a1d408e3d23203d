"""An archive's stream, counting the bytes that went through it: what an interrupted or disk-full ``save`` or
``load`` says it had written or read. tarfile streams through it (``w|`` and ``r|*`` modes: no seeking)."""

from __future__ import annotations

import io
from typing import BinaryIO


class Counted:
    """``stream`` for tarfile, with ``count``: the bytes written to it or read from it so far."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0
        self.abandoned = False

    def abandon(self) -> None:
        """Write nothing more: the archive failed or was interrupted. tarfile still flushes its last record when
        it closes, and on a pipe nobody reads (or a full disk) that write would block (or fail) again."""
        self.abandoned = True

    def write(self, data: bytes, /) -> int:
        if self.abandoned:
            return len(data)
        n = self.stream.write(data)
        self.count += len(data) if n is None else n
        return len(data)

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data

    def tell(self) -> int:
        return self.count

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("an archive is streamed")

    def close(self) -> None:
        """The caller closes the stream it gave."""
