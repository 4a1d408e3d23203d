"""The download engine against a real local HTTP server: parts, resume (also after kill -9), faults, space.

The source is a real ``ThreadingHTTPServer`` on 127.0.0.1 serving one in-memory blob with ``Range`` support and
switchable faults, read through a small ``httpx`` adapter (the registry client's status handling, shortened)
that yields the client's own ``BlobReader``, so the engine reads the socket as it does in a pull; the sink is a
real ``Layout``. The kill -9 and two-process tests load this file by path in a child process and run
:func:`child_main` there.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelctl.digest import of_bytes
from modelctl.errors import DigestMismatch, NoSpace, NotFound, RegistryError
from modelctl.oci.descriptor import Descriptor
from modelctl.oci.transport import BlobReader
from modelctl.store import Layout
from modelctl.store.directory import blob_files
from modelctl.transfer import Progress, check_space, plan, state
from modelctl.transfer.download import _Job, download
from modelctl.transfer.state import Part

MIB = 1 << 20
BLOB_SIZE = 8 * MIB + 12345  # not a multiple of the part size: the last part is short
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


# -- the server ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs when 8 parts connect at once: 1 s stalls


class BlobServer:
    """Serves one in-memory blob at ``/blob``; every fault is an attribute the test flips while it runs."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.lock = threading.Lock()
        self.bytes_served = 0
        """Body bytes the server managed to write to a socket, over all responses."""
        self.ranges: list[str | None] = []
        """The Range header of every request, in arrival order (None: no Range)."""
        self.finished: list[int] = []
        """The first byte of every response sent in full, in the order they were completed."""
        self.ignore_range = False
        self.fail_503 = 0
        """Answer this many of the next requests with 503."""
        self.retry_after: str | None = "2"
        self.not_found = False
        self.fail_with: int | None = None
        """Answer every request with this status (an error page)."""
        self.close_after: int | None = None
        """Close each response's connection after this many body bytes."""
        self.budget: int | None = None
        """Serve at most this many body bytes in total, then cut every response short."""
        self.corrupt_at: int | None = None
        """Flip the byte at this blob offset in every response that covers it."""
        self.chunk = 64 << 10
        self.delay = 0.0
        """Seconds to sleep after each chunk (a slow link)."""
        self.first_part_delay = 0.0
        """Seconds to sleep after each chunk of responses that start at byte 0 (the first part finishes last)."""
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.blob_server = self  # type: ignore[attr-defined]
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/blob"

    @property
    def requests(self) -> int:
        return len(self.ranges)

    def start(self) -> BlobServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_version = "blobserver/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv: BlobServer = self.server.blob_server  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        with srv.lock:
            srv.ranges.append(header)
            fail = srv.fail_503 > 0
            if fail:
                srv.fail_503 -= 1
        try:
            if srv.not_found:
                self._small(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
            elif srv.fail_with is not None:
                self._small(srv.fail_with, b'{"errors":[{"code":"DENIED","message":"no"}]}')
            elif fail:
                self._small(503, b"busy", {"Retry-After": srv.retry_after} if srv.retry_after else {})
            else:
                self._body(srv, header)
        except OSError:  # the client went away (a cancelled part, a killed process)
            self.close_connection = True

    def _small(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self, srv: BlobServer, header: str | None) -> None:
        size = len(srv.blob)
        start, end, status = 0, size - 1, 200
        found = _RANGE.fullmatch(header.strip()) if header and not srv.ignore_range else None
        if found:
            start = int(found[1])
            end = min(int(found[2]), size - 1) if found[2] else size - 1
            if start >= size or end < start:
                self._small(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        pos, sent = start, 0
        while pos <= end:
            with srv.lock:
                n = min(srv.chunk, end + 1 - pos)
                if srv.close_after is not None:
                    n = min(n, srv.close_after - sent)
                if srv.budget is not None:
                    n = min(n, srv.budget - srv.bytes_served)
                if n <= 0:
                    break
                srv.bytes_served += n  # reserved now (the budget holds under concurrency), returned on failure
            piece = bytearray(srv.blob[pos : pos + n]) if srv.corrupt_at is not None else srv.blob[pos : pos + n]
            if srv.corrupt_at is not None and pos <= srv.corrupt_at < pos + n:
                piece[srv.corrupt_at - pos] ^= 0xFF  # type: ignore[index]
            try:
                self.wfile.write(piece)
            except OSError:
                with srv.lock:
                    srv.bytes_served -= n
                raise
            pos += n
            sent += n
            if pos > end:
                with srv.lock:
                    srv.finished.append(start)
            delay = srv.first_part_delay if start == 0 and srv.first_part_delay else srv.delay
            if delay:
                time.sleep(delay)
        self.close_connection = True


# -- the source: httpx, with the registry client's contract -------------------------------------------------


class HttpRangeSource:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.client = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def open_range(self, start: int, end: int | None) -> Iterator[BlobReader]:
        headers = {"Range": f"bytes={start}-{'' if end is None else end}"}
        try:
            response = self.client.send(self.client.build_request("GET", self.url, headers=headers), stream=True)
        except httpx.TransportError as exc:
            raise RegistryError(f"cannot reach {self.url}: {exc}", temporary=True) from None
        try:
            status = response.status_code
            if status == 404:
                raise NotFound(f"blob {self.url} not found")
            if status >= 500 or status == 429:
                raise RegistryError(
                    f"{self.url} answered {status}",
                    status=status,
                    temporary=True,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if status not in (200, 206):
                raise RegistryError(f"{self.url} answered {status}", status=status)
            yield BlobReader(response, start=start, end=end)
        finally:
            response.close()


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def describe(data: bytes) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=of_bytes(data), size=len(data))


def child_main(argv: list[str]) -> None:
    """The kill -9 test's child: download the server's blob, slowly, until the parent kills it."""
    url, store_root, ingest, digest, size = argv
    layout = Layout(Path(store_root))
    layout.ensure()
    source = HttpRangeSource(url)
    desc = Descriptor(media_type="application/octet-stream", digest=digest, size=int(size))
    download(desc, source, layout, ingest_dir=Path(ingest), parts=8, min_part_size=MIB, retries=3)


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def blob() -> bytes:
    return random.Random(20240601).randbytes(BLOB_SIZE)


@pytest.fixture
def desc(blob: bytes) -> Descriptor:
    return describe(blob)


@pytest.fixture
def server(blob: bytes) -> Iterator[BlobServer]:
    srv = BlobServer(blob).start()
    yield srv
    srv.close()


@pytest.fixture
def source(server: BlobServer) -> Iterator[HttpRangeSource]:
    src = HttpRangeSource(server.url)
    yield src
    src.close()


@pytest.fixture
def store(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.ensure()
    return layout


@pytest.fixture
def ingest(tmp_path: Path) -> Path:
    return tmp_path / "ingest"


@pytest.fixture
def sleeps() -> list[float]:
    """Injected as the engine's ``sleep``: records every back-off instead of waiting."""
    return []


@pytest.fixture
def fetch(store: Layout, ingest: Path, sleeps: list[float]) -> Callable[..., Path]:
    """``download`` with this test's store, ingest dir and sleep recorder; keyword arguments override."""

    def run(desc: Descriptor, source: HttpRangeSource, **overrides: Any) -> Path:
        options: dict[str, Any] = {
            "ingest_dir": ingest,
            "parts": 8,
            "min_part_size": MIB,
            "retries": 3,
            "sleep": sleeps.append,
        }
        options.update(overrides)
        return download(desc, source, store, **options)

    return run


# -- tests --------------------------------------------------------------------------------------------------

Fetch = Callable[..., Path]
THIS_FILE = Path(__file__).resolve()


def partial_dir(ingest: Path, desc: Descriptor) -> Path:
    return ingest / desc.digest.hex


def blobs_in(store: Layout) -> list[str]:
    return sorted(p.name for _, p in blob_files(store.blobs_dir))


# -- the happy path -----------------------------------------------------------------------------------------


def test_parallel_parts_commit_the_right_bytes(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    path = fetch(desc, source)

    assert path == store.blob_path(desc.digest)
    assert path.read_bytes() == blob
    assert store.has_blob(desc.digest, desc.size)
    assert not partial_dir(ingest, desc).exists(), "the partial (data and state.json) must be gone after commit"
    assert list(ingest.iterdir()) == []  # not even the blob's lock file
    ranged = [r for r in server.ranges if r is not None]
    assert len(ranged) == 8, server.ranges  # eight parts, one request each
    assert server.bytes_served == len(blob)


def test_progress_ends_with_done_equal_total(
    fetch: Fetch, source: HttpRangeSource, desc: Descriptor, blob: bytes
) -> None:
    events: list[Progress] = []
    lock = threading.Lock()

    def record(event: Progress) -> None:
        with lock:
            events.append(event)

    fetch(desc, source, progress=record)

    assert events
    last = events[-1]
    assert (last.digest, last.total, last.done, last.fetched_this_run) == (desc.digest, len(blob), len(blob), len(blob))
    assert all(0 <= e.done <= e.total == len(blob) for e in events)


def test_a_blob_already_in_the_store_is_not_fetched(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, blob: bytes
) -> None:
    desc = describe(blob)
    store.write_blob(blob, desc.digest)
    assert fetch(desc, source) == store.blob_path(desc.digest)
    assert server.requests == 0


def test_empty_blob(fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path) -> None:
    desc = describe(b"")
    path = fetch(desc, source)
    assert path.read_bytes() == b""
    assert store.has_blob(desc.digest, 0)
    assert server.requests == 0


def test_small_blob_is_one_part(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, blob: bytes
) -> None:
    small = blob[: MIB + 7]  # the server serves a prefix of the blob: ask for exactly that much
    desc = describe(small)
    assert fetch(desc, source).read_bytes() == small
    assert server.ranges == [f"bytes=0-{len(small) - 1}"]


def test_parts_finishing_out_of_order_are_hashed_from_disk(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, blob: bytes
) -> None:
    """The first part arrives last: every later part is hashed by reading it back, and the digest still holds."""
    desc = describe(blob)
    server.first_part_delay = 0.02  # 16 chunks of 64 KiB: ~0.3 s, while the other parts take a few ms
    path = fetch(desc, source, fixed=True)  # eight streams at once
    assert len(server.finished) == 8 and server.finished[-1] == 0, server.finished
    assert path.read_bytes() == blob
    assert store.has_blob(desc.digest, desc.size)


# -- resume -------------------------------------------------------------------------------------------------


def test_resume_after_the_connection_drops(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    server.budget = len(blob) // 2  # then every connection is cut short
    with pytest.raises(RegistryError) as caught:
        fetch(desc, source, retries=0)
    assert caught.value.temporary

    part_dir = partial_dir(ingest, desc)
    assert (part_dir / state.STATE_FILE).is_file()
    saved = state.saved_bytes(part_dir, desc.digest, desc.size)
    assert 0 < saved <= len(blob) // 2
    assert not store.has_blob(desc.digest)

    server.budget = None
    served_before = server.bytes_served
    events: list[Progress] = []
    path = fetch(desc, source, progress=events.append)

    assert path.read_bytes() == blob
    assert events[-1].fetched_this_run == len(blob) - saved, "the resume fetches exactly what was missing"
    assert server.bytes_served - served_before == len(blob) - saved
    assert server.bytes_served < 1.5 * len(blob)
    assert not part_dir.exists()


_CHILD = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('transfer_child', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(mod)\n"
    "mod.child_main(sys.argv[2:])\n"
)


def start_child(server: BlobServer, store: Layout, ingest: Path, desc: Descriptor) -> subprocess.Popen[bytes]:
    """Another process downloading ``desc`` into the same store (child_main, from this file)."""
    argv = [str(THIS_FILE), server.url, str(store.root), str(ingest), desc.digest, str(desc.size)]
    return subprocess.Popen([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_saved(child: subprocess.Popen[bytes], part_dir: Path, desc: Descriptor, at_least: int) -> int:
    """Poll until the child's state.json exists and records ``at_least`` bytes; the child must still run."""
    deadline = time.monotonic() + 20
    saved = 0
    while time.monotonic() < deadline and child.poll() is None:
        saved = state.saved_bytes(part_dir, desc.digest, desc.size)
        if saved >= at_least and (part_dir / state.STATE_FILE).is_file():
            break
        time.sleep(0.02)
    assert child.poll() is None, f"the child ended too early: {child.communicate()}"
    assert saved >= at_least and (part_dir / state.STATE_FILE).is_file(), "the child never saved progress"
    return saved


def test_resume_after_kill_9(
    server: BlobServer, store: Layout, ingest: Path, blob: bytes, fetch: Fetch, source: HttpRangeSource
) -> None:
    desc = describe(blob)
    part_dir = partial_dir(ingest, desc)
    server.chunk, server.delay = 16 << 10, 0.05  # ~2.6 MB/s over 8 parts: the child needs ~3 s for it all
    child = start_child(server, store, ingest, desc)
    try:
        wait_for_saved(child, part_dir, desc, MIB)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.communicate()

    assert not store.has_blob(desc.digest)
    saved = state.saved_bytes(part_dir, desc.digest, desc.size)
    assert 0 < saved < len(blob)

    server.delay = 0.0
    events: list[Progress] = []
    path = fetch(desc, source, progress=events.append)

    assert path.read_bytes() == blob
    assert events[-1].fetched_this_run == len(blob) - saved
    assert server.bytes_served < 1.5 * len(blob), f"served {server.bytes_served} for a {len(blob)}-byte blob"
    assert not part_dir.exists()


@pytest.mark.parametrize("bad", ["other-digest", "not-json", "a-list"])
def test_an_unusable_state_is_ignored_and_the_download_restarts(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, ingest: Path, blob: bytes, bad: str
) -> None:
    desc = describe(blob)
    part_dir = partial_dir(ingest, desc)
    part_dir.mkdir(parents=True)
    (part_dir / state.DATA_FILE).write_bytes(b"\0" * len(blob))  # right size, wrong bytes
    state.save(part_dir, "sha256:" + "0" * 64, len(blob), [state.Part(0, len(blob), len(blob))])  # "all done"
    if bad == "not-json":
        (part_dir / state.STATE_FILE).write_text('{"digest": "sha256:')  # torn
    elif bad == "a-list":
        (part_dir / state.STATE_FILE).write_text("[]")
    assert fetch(desc, source).read_bytes() == blob
    assert server.bytes_served == len(blob)


def _claim_half_done(part_dir: Path, desc: Descriptor, blob: bytes, *, boot: object) -> None:
    """A partial whose state says the first half is written while the file holds zeros there: what a machine
    crash (not a kill) can leave behind, since the state is saved without waiting for the disk."""
    part_dir.mkdir(parents=True)
    (part_dir / state.DATA_FILE).write_bytes(b"\0" * len(blob))
    half = len(blob) // 2
    state.save(part_dir, desc.digest, len(blob), [state.Part(0, half, half), state.Part(half, len(blob), 0)])
    doc = json.loads((part_dir / state.STATE_FILE).read_text())
    doc["boot"] = boot
    (part_dir / state.STATE_FILE).write_text(json.dumps(doc))


@pytest.mark.parametrize("boot", ["another-boot", None], ids=["another-boot", "no-boot-id"])
def test_a_partial_damaged_by_a_crash_before_a_reboot_is_fetched_again(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes, boot: object
) -> None:
    desc = describe(blob)
    _claim_half_done(partial_dir(ingest, desc), desc, blob, boot=boot)
    assert fetch(desc, source).read_bytes() == blob
    assert store.has_blob(desc.digest, desc.size)
    # half on the resume, then the whole blob once the resumed copy failed verification
    assert server.bytes_served == len(blob) - len(blob) // 2 + len(blob)


def test_a_damaged_partial_from_this_boot_is_a_digest_mismatch(
    fetch: Fetch, source: HttpRangeSource, store: Layout, ingest: Path, blob: bytes
) -> None:
    """In the same boot the page cache cannot lose bytes: a bad partial is corruption, reported, not retried."""
    desc = describe(blob)
    _claim_half_done(partial_dir(ingest, desc), desc, blob, boot=state.current_boot())
    with pytest.raises(DigestMismatch):
        fetch(desc, source)
    assert not partial_dir(ingest, desc).exists()
    assert blobs_in(store) == []


def test_one_stream_hashes_its_buffers_without_reading_the_file_back(
    fetch: Fetch, source: HttpRangeSource, blob: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path of a pull from a near registry: every buffer is hashed as it is, no ``preadv``."""
    reads: list[int] = []
    real_preadv = os.preadv

    def counting_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append(sum(len(b) for b in buffers))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting_preadv)
    desc = describe(blob)
    assert fetch(desc, source, parts=1).read_bytes() == blob
    assert reads == []


@pytest.mark.timeout(60)
def test_a_failing_hash_thread_stops_the_download_instead_of_hanging_it(
    fetch: Fetch,
    source: HttpRangeSource,
    server: BlobServer,
    store: Layout,
    blob: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts wait for buffers only the hash thread gives back: if it dies (a read error of the partial), the parts
    must stop and the error must reach the caller."""
    server.first_part_delay = 0.01  # the first part finishes last: the others are read back with preadv

    def broken_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "preadv", broken_preadv)
    desc = describe(blob)
    with pytest.raises(OSError, match="Input/output error"):
        fetch(desc, source, fixed=True)  # all 8 parts at once (adaptive streams would take them in order)
    assert blobs_in(store) == []


# -- faults -------------------------------------------------------------------------------------------------


def test_wrong_content_is_a_digest_mismatch_and_leaves_nothing(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    server.corrupt_at = len(blob) // 2 + 12345
    with pytest.raises(DigestMismatch) as caught:
        fetch(desc, source)
    assert caught.value.expected == desc.digest
    assert caught.value.actual != desc.digest
    assert caught.value.exit_code == 5
    assert blobs_in(store) == []
    assert not partial_dir(ingest, desc).exists(), "a corrupt partial must never be resumed"

    server.corrupt_at = None  # the next pull starts over and succeeds
    assert fetch(desc, source).read_bytes() == blob


def test_server_ignoring_range_falls_back_to_one_stream(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    server.ignore_range = True
    events: list[Progress] = []
    path = fetch(desc, source, progress=events.append)
    assert path.read_bytes() == blob
    assert events[-1].done == len(blob)
    assert server.ranges[-1] == f"bytes=0-{len(blob) - 1}", "the fallback is one stream of the whole blob"
    assert not partial_dir(ingest, desc).exists()


def test_connection_closed_mid_part_is_retried(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, sleeps: list[float], blob: bytes
) -> None:
    desc = describe(blob)
    server.close_after = 300_000  # every response stops short; each retry resumes where the last one stopped
    assert fetch(desc, source, retries=1).read_bytes() == blob
    assert sleeps, "the engine backs off between tries"
    assert server.bytes_served == len(blob), "no byte is fetched twice"


def test_503_with_retry_after_is_honoured(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, sleeps: list[float], blob: bytes
) -> None:
    desc = describe(blob)
    server.fail_503 = 1
    assert fetch(desc, source).read_bytes() == blob
    assert sleeps == [2.0]


def test_503_forever_gives_up_after_the_retries(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, sleeps: list[float], store: Layout, blob: bytes
) -> None:
    desc = describe(blob)
    server.fail_503 = 10_000
    with pytest.raises(RegistryError) as caught:
        fetch(desc, source, retries=2)
    assert caught.value.temporary and caught.value.status == 503 and caught.value.exit_code == 7
    assert sleeps and set(sleeps) == {2.0}
    assert blobs_in(store) == []


def test_404_is_not_found_at_once(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, sleeps: list[float], store: Layout, blob: bytes
) -> None:
    desc = describe(blob)
    server.not_found = True
    with pytest.raises(NotFound) as caught:
        fetch(desc, source)
    assert caught.value.exit_code == 3
    assert sleeps == []
    assert server.requests <= 8  # one try per part, no retries
    assert blobs_in(store) == []


@pytest.mark.parametrize("status", [400, 401, 403])
def test_a_permanent_error_is_not_retried(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, sleeps: list[float], store: Layout, status: int
) -> None:
    desc = describe(server.blob)
    server.fail_with = status
    with pytest.raises(RegistryError) as caught:
        fetch(desc, source, retries=5)
    assert caught.value.status == status and not caught.value.temporary
    assert sleeps == []
    assert server.requests <= 8
    assert blobs_in(store) == []


# -- concurrency --------------------------------------------------------------------------------------------


def test_two_threads_download_the_same_blob_once(
    fetch: Fetch, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    server.chunk, server.delay = 64 << 10, 0.01  # slow enough that the second caller arrives mid-download
    barrier = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        src = HttpRangeSource(server.url)
        try:
            barrier.wait()
            results.append(fetch(desc, src))
        except BaseException as exc:
            errors.append(exc)
        finally:
            src.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 2 and results[0] == results[1] == store.blob_path(desc.digest)
    assert results[0].read_bytes() == blob
    assert server.bytes_served < 1.3 * len(blob), f"served {server.bytes_served} for a {len(blob)}-byte blob"
    assert not partial_dir(ingest, desc).exists()


def test_a_second_process_waits_for_the_first_and_fetches_nothing(
    server: BlobServer, store: Layout, ingest: Path, blob: bytes, fetch: Fetch, source: HttpRangeSource
) -> None:
    desc = describe(blob)
    server.chunk, server.delay = 64 << 10, 0.05  # the child needs ~0.8 s once it has started
    child = start_child(server, store, ingest, desc)
    try:
        wait_for_saved(child, partial_dir(ingest, desc), desc, 0)  # the child holds the blob's lock now
        path = fetch(desc, source)  # blocks until the child commits, then finds the blob
        assert child.wait(timeout=30) == 0, child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.communicate()
    assert path == store.blob_path(desc.digest)
    assert path.read_bytes() == blob
    assert server.bytes_served < 1.3 * len(blob), f"served {server.bytes_served} for a {len(blob)}-byte blob"


# -- plan and space -----------------------------------------------------------------------------------------


def test_check_space_refuses_when_the_disk_is_full(store: Layout, ingest: Path, blob: bytes) -> None:
    desc = describe(blob)
    work = plan([desc], store, ingest_dir=ingest)
    assert work.missing == (desc,)
    assert work.bytes_total == work.bytes_to_fetch == work.bytes_to_allocate == len(blob)

    with pytest.raises(NoSpace) as caught:
        check_space(work, ingest, free=lambda p: 10)
    error = caught.value
    assert error.exit_code == 8
    need = (len(blob) + (64 << 20)) / (1 << 30)
    assert f"needs {need:.2f} GiB" in error.message
    assert "0.00 GiB is free" in error.message
    assert error.hint

    check_space(work, ingest, free=lambda p: 1 << 40)  # plenty: no error


def test_plan_counts_partials_and_present_blobs(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, store: Layout, ingest: Path, blob: bytes
) -> None:
    desc = describe(blob)
    other = describe(blob[:1000])
    store.write_blob(blob[:1000], other.digest)
    server.budget = len(blob) // 4
    with pytest.raises(RegistryError):
        fetch(desc, source, retries=0)
    saved = state.saved_bytes(partial_dir(ingest, desc), desc.digest, desc.size)
    assert saved > 0

    work = plan([desc, other], store, ingest_dir=ingest)
    assert work.missing == (desc,)
    assert work.bytes_total == len(blob)
    assert work.bytes_to_fetch == len(blob) - saved
    assert work.bytes_to_allocate == 0  # the partial is preallocated already
    check_space(work, ingest, free=lambda p: 10)  # nothing new to allocate: no refusal


# -- state --------------------------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32
SIZE = 1000
GOOD = {"digest": DIGEST, "size": SIZE, "parts": [[0, 500, 100], [500, 1000, 500]]}


def _write_state(directory: Path, doc: object, data_size: int = SIZE) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / state.DATA_FILE).write_bytes(b"\0" * data_size)
    (directory / state.STATE_FILE).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_state_load_accepts_a_good_state(tmp_path: Path) -> None:
    _write_state(tmp_path, GOOD)
    # a state without a boot id (older modelctl) loads, as from an unknown boot
    assert state.load(tmp_path, DIGEST, SIZE) == ([state.Part(0, 500, 100), state.Part(500, 1000, 500)], None)
    assert state.saved_bytes(tmp_path, DIGEST, SIZE) == 600


def test_state_save_then_load_round_trips(tmp_path: Path) -> None:
    (tmp_path / state.DATA_FILE).write_bytes(b"\0" * SIZE)
    parts = state.split(SIZE, 3, 100)
    parts[1].done = 7
    state.save(tmp_path, DIGEST, SIZE, parts)
    assert state.load(tmp_path, DIGEST, SIZE) == (parts, state.current_boot())


@pytest.mark.parametrize(
    ("doc", "data_size"),
    [
        pytest.param("{not json", SIZE, id="corrupt-json"),
        pytest.param("", SIZE, id="empty-file"),
        pytest.param("[]", SIZE, id="a-list"),
        pytest.param("null", SIZE, id="null"),
        pytest.param("42", SIZE, id="a-number"),
        pytest.param({**GOOD, "parts": 5}, SIZE, id="parts-not-a-list"),
        pytest.param({**GOOD, "parts": "abc"}, SIZE, id="parts-a-string"),
        pytest.param({**GOOD, "digest": "sha256:" + "cd" * 32}, SIZE, id="other-digest"),
        pytest.param({**GOOD, "size": SIZE + 1}, SIZE, id="other-size"),
        pytest.param({"digest": DIGEST, "size": SIZE}, SIZE, id="no-parts"),
        pytest.param({**GOOD, "parts": [[0, 500, 100]]}, SIZE, id="parts-short-of-size"),
        pytest.param({**GOOD, "parts": [[0, 500, 0], [400, 1000, 0]]}, SIZE, id="overlapping-parts"),
        pytest.param({**GOOD, "parts": [[0, 500, 501], [500, 1000, 0]]}, SIZE, id="done-beyond-part"),
        pytest.param({**GOOD, "parts": [[0, 500, -1], [500, 1000, 0]]}, SIZE, id="negative-done"),
        pytest.param({**GOOD, "parts": [[0, 500, "x"], [500, 1000, 0]]}, SIZE, id="non-numeric"),
        pytest.param({**GOOD, "parts": [[0, 500], [500, 1000, 0]]}, SIZE, id="malformed-part"),
        pytest.param(GOOD, SIZE - 1, id="data-file-wrong-size"),
    ],
)
def test_state_load_rejects_bad_state(tmp_path: Path, doc: object, data_size: int) -> None:
    _write_state(tmp_path, doc, data_size)
    assert state.load(tmp_path, DIGEST, SIZE) is None
    assert state.saved_bytes(tmp_path, DIGEST, SIZE) == 0


def test_state_load_without_data_file(tmp_path: Path) -> None:
    _write_state(tmp_path, GOOD)
    (tmp_path / state.DATA_FILE).unlink()
    assert state.load(tmp_path, DIGEST, SIZE) is None


@pytest.mark.parametrize(
    ("size", "parts", "minimum", "count"),
    [(0, 8, 10, 1), (10, 8, 100, 1), (1000, 8, 100, 8), (1000, 8, 300, 3), (1001, 4, 1, 4)],
)
def test_split_tiles_the_blob(size: int, parts: int, minimum: int, count: int) -> None:
    out = state.split(size, parts, minimum)
    assert len(out) == count
    assert out[0].start == 0 and out[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(out))


def test_split_cuts_large_blobs_into_bounded_parts() -> None:
    size = 20 * state.MAX_PART + 5
    out = state.split(size, 8, 32 << 20)
    assert len(out) == 21 and max(p.length for p in out) <= state.MAX_PART
    assert out[0].start == 0 and out[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(out))


def test_more_parts_than_streams_are_fetched_in_order_by_at_most_parts_streams(
    fetch: Fetch,
    source: HttpRangeSource,
    server: BlobServer,
    store: Layout,
    blob: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state, "MAX_PART", MIB // 4)
    open_range = source.open_range
    lock = threading.Lock()
    live = [0, 0]  # now, most

    @contextmanager
    def counting(start: int, end: int | None) -> Iterator[Any]:
        with lock:
            live[0] += 1
            live[1] = max(live[1], live[0])
        try:
            with open_range(start, end) as reader:
                yield reader
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(source, "open_range", counting)
    desc = describe(blob)
    path = fetch(desc, source, parts=2, min_part_size=MIB // 4, fixed=True)  # (one stream would merge the parts)
    assert path.read_bytes() == blob
    ranged = [r for r in server.ranges if r is not None]
    assert len(ranged) == -(-len(blob) // (MIB // 4)), ranged
    assert live[1] <= 2


def test_a_free_stream_takes_the_second_half_of_a_slow_part(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, blob: bytes
) -> None:
    """Two parts; the first is slow. The stream that finished the second splits what is left of the first and
    fetches the second half of it, so a pull does not end with one stream on a long tail."""
    server.first_part_delay = 0.02  # ~1.3 s for the first half of the blob; the rest takes milliseconds
    desc = describe(blob)
    path = fetch(desc, source, parts=2, min_part_size=MIB // 4, fixed=True)
    assert path.read_bytes() == blob
    starts = sorted(int(r.split("=")[1].split("-")[0]) for r in server.ranges if r is not None)
    half = -(-len(blob) // 2)
    assert starts[:1] == [0] and half in starts
    assert any(0 < start < half for start in starts), starts  # a piece of the first part, fetched by the other stream
    # the slow stream stopped where the split put its end (a chunk or two may be on the wire when it closes)
    assert server.bytes_served < len(blob) + MIB // 2


def test_progress_reports_the_streams_a_slow_link_grew_to(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, blob: bytes
) -> None:
    """Each connection of this server is slow (64 KiB per 10 ms): the download starts with one stream and adds
    more, never past the cap."""
    server.delay = 0.01
    events: list[Progress] = []
    desc = describe(blob)
    fetch(desc, source, parts=4, min_part_size=MIB // 4, progress=events.append)  # small parts: work for 4
    assert events[0].streams <= 2  # one at first: the first event comes after a buffer's worth (~0.2 s)
    assert events[-1].streams == 4
    assert all(e.streams <= 4 for e in events)


def test_a_buffer_written_at_the_frontier_goes_to_the_hash_even_when_it_is_behind(tmp_path: Path) -> None:
    """The hash is still reading back what another stream wrote (``claimed`` < frontier) when the frontier stream
    writes its next buffer: that buffer is queued for the hash, to be hashed after the read-back, instead of being
    written only. (Before, a buffer was handed over only when the hash had caught up exactly, so a stream that found
    the hash behind raced ahead and every byte it wrote afterwards was read back from the page cache.) A buffer
    written past the frontier is not queued."""
    desc = describe(bytes(4 * MIB))
    job = _Job(desc, HttpRangeSource("http://127.0.0.1:9/"), tmp_path, 3, MIB, 0, None, None)
    half = MIB // 2
    job.parts = [Part(0, 2 * MIB, 2 * MIB), Part(2 * MIB, 3 * MIB, half), Part(3 * MIB, 4 * MIB)]
    job.claimed = 2 * MIB  # the hash has the first part; the second part's first half is written, not hashed
    assert not job._advance(job.parts[2], 3 * MIB, bytearray(half), half)  # past the frontier: read back later
    assert job._advance(job.parts[1], 2 * MIB + half, bytearray(half), half)  # at the frontier
    assert [(offset, length) for offset, _, length in job.hash_queue] == [(2 * MIB + half, half)]


def test_one_stream_fetches_the_parts_it_has_left_in_one_request(
    fetch: Fetch,
    source: HttpRangeSource,
    server: BlobServer,
    store: Layout,
    blob: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the download runs one stream for good, the untouched parts after the one it takes are fetched with it:
    one request instead of one per part (each request costs the registry CPU the sha256 is short of)."""
    monkeypatch.setattr(state, "MAX_PART", MIB // 4)
    desc = describe(blob)
    assert fetch(desc, source, parts=1, min_part_size=MIB // 4).read_bytes() == blob
    assert server.ranges == [f"bytes=0-{len(blob) - 1}"]
