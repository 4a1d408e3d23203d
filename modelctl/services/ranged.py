"""The bytes of one window of a ranged response, whether or not the server honoured ``Range``."""

from __future__ import annotations

from collections.abc import Iterable


def take_window(chunks: Iterable[bytes], skip: int, want: int) -> bytes:
    """The ``want`` bytes after the first ``skip`` of ``chunks``; stops reading as soon as it has them.

    ``skip`` is non-zero when the server ignored ``Range`` and sent the body from byte 0 (a 200, not a 206).
    """
    pieces: list[bytes] = []
    have = 0
    for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        pieces.append(chunk)
        have += len(chunk)
        if have >= want:
            break
    return b"".join(pieces)[:want]
