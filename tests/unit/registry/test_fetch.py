"""A blob in flight: which bytes a client may be sent, and how a Range maps onto a blob of known size."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp import web

from modelctl.digest import Digest
from registry.fetch import Fetch, requested_range

DIGEST = Digest("sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 3)),
        ("bytes=4-", 10, (4, 9)),
        ("bytes=4-99", 10, (4, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=0-3", None, None),  # size not known yet: the whole body
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole body, as HTTP allows
        ("items=0-3", 10, None),
    ],
)
def test_requested_range(header: str | None, size: int | None, expected: tuple[int, int] | None) -> None:
    assert requested_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=12-20", "bytes=5-4", "bytes=-0"])
def test_unsatisfiable_range_is_416(header: str) -> None:
    with pytest.raises(web.HTTPRequestRangeNotSatisfiable):
        requested_range(header, 10)


def started(tmp_path: Path, size: int) -> Fetch:
    """A fetch whose upstream answered 200 with ``size`` bytes to come (call it inside a running loop)."""
    data = tmp_path / "data"
    data.write_bytes(b"")
    fetch = Fetch(DIGEST)
    fetch.start(data, size)
    return fetch


def test_last_byte_is_withheld_until_verified(tmp_path: Path) -> None:
    async def scenario() -> None:
        fetch = started(tmp_path, 4)
        assert await fetch.found
        fetch.advance(4)
        assert fetch.readable == 3, "all four bytes offered before the digest was checked"
        waiter = asyncio.ensure_future(fetch.wait_past(3))
        await asyncio.sleep(0)
        assert not waiter.done()
        fetch.finish(None)
        await asyncio.wait_for(waiter, 1)
        assert fetch.verified and fetch.readable == 4

    asyncio.run(scenario())


def test_a_failed_download_wakes_every_reader_with_its_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        fetch = started(tmp_path, 100)
        fd = fetch.acquire()
        waiters = [asyncio.ensure_future(fetch.wait_past(50)) for _ in range(3)]
        fetch.advance(10)
        fetch.finish("digest mismatch")
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert fetch.error == "digest mismatch" and not fetch.verified
        fetch.release()  # the last user closes the shared descriptor
        with pytest.raises(OSError):
            os.fstat(fd)

    asyncio.run(scenario())
