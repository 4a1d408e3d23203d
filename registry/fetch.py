"""One upstream blob in flight: the bytes land in an upload file as they arrive, and every client reads that file.

The pull-through cache starts one download per blob and hands each client the same :class:`Fetch`. A client reads
what has been written so far (``os.pread`` on one shared descriptor: the file keeps its inode when it is renamed
into ``blobs/`` and its bytes when a failed one is deleted), waits for more, and sends it on. Until the digest is
verified the last byte of the blob is withheld from everyone, so no client ever holds the whole blob before it was
checked: a blob that fails verification reaches every client as a cut connection and a short body, never as a
complete wrong one. A small blob (up to :data:`WHOLE_BELOW`, a config, an empty one) is answered only once it is
verified, from the stored file, so its failure is a 503 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path
from typing import Final

from aiohttp import web

from modelctl.digest import Digest
from registry.errors import RegistryHTTPError

READ_CHUNK: Final = 1 << 20
WHOLE_BELOW: Final = 1 << 20
"""A blob up to this size is answered once verified (a failure is then a clean 503): streaming it gains nothing."""
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")


class Fetch:
    """The state of one upstream download: where its bytes are, how many there are, and how it ended."""

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self.size: int | None = None
        """The upstream's Content-Length; None when it sent none."""
        self.written = 0
        """Bytes on the file so far (all of them hashed)."""
        self.verified = False
        self.error: str | None = None
        self.found: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        """True once the upstream answered with the blob (the file exists), False when it has none."""
        self._fd: int | None = None
        self._users = 0
        self._event = asyncio.Event()

    # -- the writer's side -------------------------------------------------------------------------------
    def start(self, path: Path, size: int | None) -> None:
        """The upstream answered 200: its bytes go to ``path`` (empty, just created)."""
        self.size = size
        self._fd = os.open(path, os.O_RDONLY)
        self._users += 1  # the writer holds the descriptor open until it ends
        self.found.set_result(True)

    def absent(self) -> None:
        self.found.set_result(False)

    def advance(self, count: int) -> None:
        self.written += count
        self._wake()

    def finish(self, error: str | None) -> None:
        """The download ended: verified and stored (``error`` None), or failed and deleted."""
        if not self.found.done():
            self.found.set_exception(RegistryHTTPError("UNAVAILABLE", error or "the download ended unanswered"))
            self.found.exception()  # retrieved: a fetch nobody awaited must not log "exception never retrieved"
        self.verified = error is None
        self.error = error
        self._wake()
        if self._fd is not None:
            self.release()

    @property
    def ended(self) -> bool:
        return self.verified or self.error is not None

    # -- the readers' side -------------------------------------------------------------------------------
    @property
    def readable(self) -> int:
        """Bytes a client may be sent now: all once verified, else all but the last one written."""
        return self.written if self.verified else max(self.written - 1, 0)

    def acquire(self) -> int:
        """The shared read descriptor, kept open until every :meth:`release`."""
        assert self._fd is not None, "acquire() before start()"
        self._users += 1
        return self._fd

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def wait_past(self, offset: int) -> None:
        """Return once more than ``offset`` bytes are readable, or the download ended."""
        while self.readable <= offset and not self.ended:
            event = self._event
            await event.wait()

    async def wait_ended(self) -> None:
        while not self.ended:
            event = self._event
            await event.wait()

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


def requested_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """``Range: bytes=A-B`` of a blob of ``size`` bytes as (first, last); None: send it all (no Range, several
    ranges, or a size not known). An unsatisfiable range raises 416, as for a stored blob."""
    if header is None or size is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or found[1] == found[2] == "":
        return None
    if found[1] == "":  # the last N bytes
        first, last = max(size - int(found[2]), 0), size - 1 if int(found[2]) else -1
    else:
        first, last = int(found[1]), min(int(found[2]), size - 1) if found[2] else size - 1
    if first >= size or last < first:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return first, last


async def stream(request: web.Request, fetch: Fetch, headers: dict[str, str]) -> web.StreamResponse:
    """Answer a GET from ``fetch`` as it grows (200, or 206 for a Range once the size is known); a download that
    fails cuts the connection."""
    span = requested_range(request.headers.get("Range"), fetch.size)
    response = web.StreamResponse(headers=headers)
    first, last = span if span is not None else (0, None if fetch.size is None else fetch.size - 1)
    if span is not None:
        response.set_status(206)
        response.headers["Content-Range"] = f"bytes {first}-{last}/{fetch.size}"
    if last is not None:
        response.content_length = last - first + 1
    fd = fetch.acquire()
    try:
        await response.prepare(request)
        await _copy(request, response, fetch, fd, first, last)
    finally:
        fetch.release()
    return response


async def _copy(
    request: web.Request, response: web.StreamResponse, fetch: Fetch, fd: int, first: int, last: int | None
) -> None:
    loop = asyncio.get_running_loop()
    offset = first
    while last is None or offset <= last:
        await fetch.wait_past(offset)
        if fetch.error is not None:
            _cut(request)
            return
        end = fetch.readable if last is None else min(fetch.readable, last + 1)
        if offset >= end:  # ended and verified, nothing past offset: the whole blob (of unknown size) was sent
            break
        data = await loop.run_in_executor(None, os.pread, fd, min(READ_CHUNK, end - offset), offset)
        if not data:  # cannot happen while the file only grows; never spin on it
            _cut(request)
            return
        try:
            await response.write(data)
        except (ConnectionError, RuntimeError):  # the client went away; the download goes on for the others
            return
        offset += len(data)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()


def _cut(request: web.Request) -> None:
    """End the connection mid-body: the client sees fewer bytes than announced (or no closing chunk)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
