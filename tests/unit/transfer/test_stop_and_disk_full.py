"""The download engine stopped by its caller (Ctrl-C in the CLI) and hitting a full disk; the pool that stops a
service's worker threads on an interrupt; the disk-full errors of atomic writes.

The blob server is the in-process HTTP server of ``test_download`` (its fixtures come through ``conftest.py``); a
full disk is a fake here (``posix_fallocate``, a write or an fsync raising ENOSPC): the real-filesystem versions are
in ``tests/integration/test_disk_full.py``.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_download import MIB, BlobServer, Fetch, HttpRangeSource, describe, partial_dir

from modelctl import atomic
from modelctl.digest import Digest
from modelctl.errors import NoSpace
from modelctl.services import parallel
from modelctl.store import Layout
from modelctl.transfer import Stopped, state


def saved(directory: Path, digest: Digest, size: int) -> list[state.Part]:
    loaded = state.load(directory, digest, size)
    return loaded[0] if loaded else []


def part_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modelctl-part")]


def test_a_stop_ends_a_download_blocked_in_reads_at_once_and_keeps_the_partial(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, blob: bytes, ingest: Path, store: Layout
) -> None:
    desc = describe(blob)
    server.delay = 0.05  # 64 KiB every 50 ms per part: ~1.6 s for the 8 MiB blob in 4 parts
    stop = threading.Event()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fetch(desc, source, stop=stop, parts=4)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while sum(p.done for p in saved(partial_dir(ingest, desc), desc.digest, desc.size)) < MIB:
        assert time.monotonic() < deadline and not outcome, f"the download never got half-way: {outcome}"
        time.sleep(0.01)
    server.delay = 5.0  # the link stalls: every part waits in a read for seconds
    time.sleep(0.3)
    stopped_at = time.monotonic()
    stop.set()
    worker.join(timeout=5)
    elapsed = time.monotonic() - stopped_at
    assert isinstance(outcome[0], Stopped), outcome
    assert elapsed < 1.0, f"the stop took {elapsed:.2f} s"
    time.sleep(0.2)
    assert part_threads() == [], "a part thread is still blocked in its read: the stop did not abort it"

    parts = saved(partial_dir(ingest, desc), desc.digest, desc.size)
    data = (partial_dir(ingest, desc) / state.DATA_FILE).read_bytes()
    assert sum(p.done for p in parts) >= MIB
    for p in parts:  # the saved state claims only bytes that are there
        assert data[p.start : p.position] == blob[p.start : p.position]

    server.delay = 0.0
    before = server.bytes_served
    path = fetch(desc, source, parts=4)
    assert path.read_bytes() == blob
    assert server.bytes_served - before <= len(blob) - sum(p.done for p in parts) + 4 * (64 << 10)


def test_a_stop_set_before_the_start_downloads_nothing(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, blob: bytes, ingest: Path
) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        fetch(describe(blob), source, stop=stop)
    assert server.requests == 0 and not partial_dir(ingest, describe(blob)).exists()


def test_a_stop_ends_the_wait_for_another_process_downloading_the_same_blob(
    fetch: Fetch, source: HttpRangeSource, server: BlobServer, blob: bytes, ingest: Path
) -> None:
    import filelock

    desc = describe(blob)
    ingest.mkdir(parents=True)
    other = filelock.FileLock(str(ingest / f"{desc.digest.hex}.lock"))  # another pull holds the blob
    other.acquire()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(Stopped):
            fetch(desc, source, stop=stop)
    finally:
        other.release()
    assert time.monotonic() - started < 1.0 and server.requests == 0


def test_no_room_to_preallocate_leaves_no_partial(
    fetch: Fetch, source: HttpRangeSource, blob: bytes, ingest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    desc = describe(blob)
    with pytest.raises(NoSpace) as caught:
        fetch(desc, source)
    error = caught.value
    assert error.exit_code == 8 and error.directory == str(ingest)
    assert f"not enough disk space in {ingest}: the download of {desc.digest[:19]} needs" in error.message
    assert not partial_dir(ingest, desc).exists(), "a preallocated, empty partial would hold the space"


def test_a_state_save_on_a_full_disk_leaves_the_old_state_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = Digest(f"sha256:{'a' * 64}")
    (tmp_path / state.DATA_FILE).write_bytes(b"\0" * 100)
    state.save(tmp_path, digest, 100, [state.Part(0, 100, 40)])
    real_write_text = Path.write_text

    def torn(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real_write_text(self, data[:5])  # a few bytes made it, then the disk was full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        state.save(tmp_path, digest, 100, [state.Part(0, 100, 90)])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.DATA_FILE, state.STATE_FILE]
    assert saved(tmp_path, digest, 100) == [state.Part(0, 100, 40)]


# -- the pool of a service --------------------------------------------------------------------------------------


def test_an_interrupt_stops_the_workers_and_does_not_wait_for_the_stuck_ones() -> None:
    stop = threading.Event()
    stuck = threading.Event()

    def work(i: int) -> int:
        if i == 0:
            stuck.wait(10)  # a worker that will not notice the stop (blocked in a connect, say)
        else:
            stop.wait(10)
        return i

    timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            parallel.each(work, [0, 1, 2], workers=3, stop=stop)
        elapsed = time.monotonic() - started
    finally:
        stuck.set()
        timer.cancel()
    assert stop.is_set()
    assert elapsed < 0.2 + parallel.GRACE + 0.5, f"waited {elapsed:.2f} s"


def test_a_failure_waits_for_the_others_and_raises_the_first() -> None:
    done: list[int] = []

    def work(i: int) -> int:
        if i == 1:
            raise ValueError("one failed")
        time.sleep(0.1)
        done.append(i)
        return i

    with pytest.raises(ValueError, match="one failed"):
        parallel.each(work, [0, 1, 2], workers=3, stop=threading.Event())
    assert sorted(done) == [0, 2]
    assert parallel.each(lambda i: i * 2, [1, 2, 3], workers=2, stop=threading.Event()) == [2, 4, 6]


# -- atomic writes on a full disk -------------------------------------------------------------------------------


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the data only reaches the disk at the fsync: that is where a full disk shows
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(NoSpace) as caught:
        atomic.write(target, b"new content")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert caught.value.directory == str(tmp_path)
    assert caught.value.message.startswith(f"not enough disk space in {tmp_path}: writing index.json needs at least")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (21 << 20, "21.0 MiB"), (5 << 30, "5.00 GiB")],
)
def test_human_sizes(n: int, text: str) -> None:
    assert atomic.human(n) == text


def test_no_space_says_how_much_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 3 << 20)
    error = atomic.no_space(tmp_path, 10 << 20, "the archive")
    assert error.message == f"not enough disk space in {tmp_path}: the archive needs 7.0 MiB more (3.0 MiB free)"
    assert error.needed == 7 << 20 and error.exit_code == 8
    small = atomic.no_space(tmp_path, 100, "writing x")
    assert "needs at least 1.0 MiB more" in small.message  # the write did fail: never ask for nothing
