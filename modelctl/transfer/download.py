"""One blob, fetched as parallel Range parts into one preallocated file, hashed while it arrives, then committed.

Threads, not asyncio: ``recv_into``, ``os.pwrite`` and ``hashlib`` release the GIL on large buffers, so a few
threads keep a fast link busy. Each part thread reads into 1 MiB buffers from a small pool and writes them with
``pwrite``. The sha256 follows the contiguous written prefix (the *frontier*) in one hash thread, outside the
engine's lock: a buffer written at the frontier is handed to that thread as it is (the usual case: one stream on a
fast link, or the first of several parts), and any other written range is read back from the page cache with
``os.preadv`` once the frontier passes it. Handing buffers over couples a fast download to the hash speed instead of
racing ahead and reading everything back, which on 2 cores is what made it fast. Large blobs are cut into more
parts than streams, taken in order, so the frontier keeps pace with the download; how many streams run is measured
while the download runs (:mod:`modelctl.transfer.streams`). No second pass over the file.

Durability: nothing here waits for the disk. A ``kill -9`` keeps page-cache data, so the part state saved every
0.5 s is exact for a resume in the same boot; a kernel crash or power loss (a new boot id) may have lost bytes the
state claims, so a partial from another boot that then fails verification is fetched once more from scratch. The
finished blob is committed unflushed and recorded by the store (see ``modelctl.store.journal``).

Stopping (Ctrl-C, SIGTERM): the caller sets ``stop``; the supervising thread notices within ``POLL``, cancels the
parts, shuts down the sockets they may be blocked reading (a stalled link would otherwise hold them for the whole
stall timeout), waits ``GRACE`` for them, saves the part state and raises :class:`Stopped`. What is saved is exact:
a part's ``done`` grows only after its bytes were written. A part thread still stuck after ``GRACE`` (in a connect,
say) is left behind: it can only rewrite bytes past the saved state, and the file descriptor is closed once it ends.

A full disk (ENOSPC while preallocating, writing or saving the state) is raised as ``NoSpace``; a fresh partial that
could not be allocated is removed, a started one is kept for the resume, and no temp file stays behind.
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modelctl import atomic
from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import DigestMismatch, IntegrityError, ModelctlError, RegistryError
from modelctl.oci.descriptor import Descriptor
from modelctl.transfer import state
from modelctl.transfer.state import Part
from modelctl.transfer.streams import Streams

if TYPE_CHECKING:
    import filelock

SAVE_INTERVAL = 0.5
POLL = 0.1
"""How often the supervising thread looks at the caller's ``stop`` (and a waiter at the blob's lock)."""
GRACE = 0.5
"""How long a stop waits for the part threads before saving the state without them."""
PROGRESS_INTERVAL = 0.1
BUFFER_SIZE = 1 << 20
"""Small enough that a buffer is still in the CPU cache when it is hashed (4-16 MiB buffers were slower)."""
HASH_QUEUE = 8
"""Buffers that may wait for the hash thread beyond one per stream."""
FILL_TIME = 0.2
PROBE_TICK = 0.025
"""How often the supervising thread measures the throughput while the stream count is being probed."""
"""A buffer is written out when full or after this long, whichever comes first."""
MAX_BACKOFF = 10.0


class RangeReader(Protocol):
    status: int
    offset: int
    total: int | None

    def read_into(self, view: memoryview) -> int:
        """Some bytes into ``view`` as soon as there are any (like ``recv_into``); 0 at the end of the body."""
        ...

    # Optional: ``abort()``, called from another thread to end a read blocked in ``read_into`` (see _abort_readers).


class RangeSource(Protocol):
    def open_range(self, start: int, end: int | None) -> AbstractContextManager[RangeReader]: ...


class BlobSink(Protocol):
    def has_blob(self, digest: Digest, size: int | None = None) -> bool: ...
    def blob_path(self, digest: Digest) -> Path: ...
    def commit_blob(self, path: Path, digest: Digest, *, flush: bool = ...) -> Path: ...


@dataclass(frozen=True, slots=True)
class Progress:
    digest: Digest
    total: int
    done: int
    fetched_this_run: int
    streams: int = 1
    """How many parallel streams the download wants now (see :mod:`modelctl.transfer.streams`)."""


class _IgnoresRange(Exception):
    """The server answered a ranged request with the whole body: fall back to one stream from byte 0."""


class Stopped(Exception):
    """The caller's ``stop`` was set: the parts are stopped and the partial's state saved for a resume."""


class _Cancelled(Exception):
    pass


class _Counter:
    """The bytes one stream received, for the stream controller; written by that stream's thread only."""

    __slots__ = ("ended", "received")

    def __init__(self) -> None:
        self.received = 0
        self.ended = False


class _LostInCrash(Exception):
    """A partial resumed from another boot failed verification: a crash lost bytes its saved state claimed."""


def download(
    desc: Descriptor,
    source: RangeSource,
    sink: BlobSink,
    *,
    ingest_dir: Path,
    parts: int,
    min_part_size: int,
    retries: int,
    progress: Callable[[Progress], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
    fixed: bool = False,
) -> Path:
    """Fetch ``desc`` unless the store has it; resume a partial; verify; commit. Returns the blob's path.

    A stalled part is the source's business: its HTTP client's read timeout (``MODELCTL_STALL_TIMEOUT``) raises,
    and the part is retried here. ``sleep`` waits between retries (default: a wait that a stop cuts short).
    Setting ``stop`` (from another thread) ends the download within about ``POLL + GRACE`` with :class:`Stopped`,
    the partial saved; a full disk raises ``NoSpace``. ``parts`` caps the parallel streams, which start few and grow
    while they add throughput (:mod:`modelctl.transfer.streams`); ``fixed`` runs ``parts`` streams from the start."""
    import filelock

    ingest_dir.mkdir(parents=True, exist_ok=True)
    hex_digest = desc.digest.hex
    lock = filelock.FileLock(str(ingest_dir / f"{hex_digest}.lock"))
    _acquire(lock, stop)
    try:
        # Another process may have fetched it while we waited for the lock: one download per blob.
        if sink.has_blob(desc.digest, desc.size):
            drop_lock_file(lock)
            return sink.blob_path(desc.digest)

        directory = ingest_dir / hex_digest

        def attempt(streams: int, part_size: int) -> _Job:
            def run_job() -> _Job:
                job = _Job(desc, source, directory, streams, part_size, retries, progress, sleep, stop, fixed)
                job.run()
                return job

            try:
                return run_job()
            except _LostInCrash:
                return run_job()  # the damaged partial was reset: this run starts from byte 0

        def room() -> int:  # what this blob still needs: all of it unless its partial is allocated
            return 0 if state.load(directory, desc.digest, desc.size) else desc.size

        with atomic.space_for(ingest_dir, room, f"the download of {desc.digest[:19]}"):
            try:
                job = attempt(parts, min_part_size)
            except _IgnoresRange:
                shutil.rmtree(directory, ignore_errors=True)
                job = attempt(1, desc.size or 1)
        committed = sink.commit_blob(job.data_path, desc.digest, flush=False)
        job.reset()  # the data moved into the store; drop the now stale state.json with its directory
        drop_lock_file(lock)
        return committed
    finally:
        lock.release()


def drop_lock_file(lock: filelock.BaseFileLock) -> None:
    """Remove a blob's lock file while holding it (the blob is in the store, or its partial was deleted), so
    ``ingest/`` does not keep one per blob ever pulled. Safe because filelock (>= 4.3.2, see pyproject.toml) does
    not count a lock taken on a file already unlinked: a process that was waiting on the old file opens the path
    again and contends with any newcomer on the one new file (tests/unit/transfer/test_lock_files.py); and after a
    commit, any later holder finds the blob stored and returns."""
    with suppress(OSError):  # gone already, or a file system that refuses: a leftover lock file is harmless
        os.unlink(lock.lock_file)


def _acquire(lock: filelock.BaseFileLock, stop: threading.Event | None) -> None:
    """Take the blob's cross-process lock (another pull of it may hold it for minutes), giving up on ``stop``."""
    import filelock

    while True:
        try:
            lock.acquire(timeout=POLL if stop is not None else -1)
            return
        except filelock.Timeout:
            if stop is not None and stop.is_set():
                raise Stopped() from None


class _Job:
    def __init__(
        self,
        desc: Descriptor,
        source: RangeSource,
        directory: Path,
        parts: int,
        min_part_size: int,
        retries: int,
        progress: Callable[[Progress], None] | None,
        sleep: Callable[[float], None] | None,
        stop: threading.Event | None = None,
        fixed: bool = False,
    ) -> None:
        self.desc = desc
        self.source = source
        self.dir = directory
        self.data_path = directory / state.DATA_FILE
        self.n_parts = parts
        self.min_part_size = min_part_size
        self.retries = retries
        self.progress = progress
        self.cond = threading.Condition(threading.Lock())  # never taken twice by one thread: no RLock needed
        self.cancel = threading.Event()
        """Set when the parts must stop: a failure, the caller's ``stop``, or the end of the run."""
        self.sleep: Callable[[float], object] = sleep or self.cancel.wait
        self.stop = stop
        self.readers: set[RangeReader] = set()
        """Open responses of the part threads (guarded by ``cond``): a stop aborts them."""
        self.hasher = self.desc.digest.hasher()
        self.hashed = 0
        self.hash_busy = 0.0
        """Seconds the hash thread spent hashing (and reading back): ``hashed / hash_busy`` is what it can take."""
        self.claimed = 0
        """End of the bytes the hash thread has taken (a buffer or a read-back in progress); <= frontier."""
        self.hash_queue: deque[tuple[int, bytearray, int]] = deque()
        """(offset, buffer, length) of buffers written at the frontier, in order, for the hash thread."""
        self.buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.buffer_size = max(1, min(BUFFER_SIZE, desc.size))
        self.buffers_left = max(1, parts) + HASH_QUEUE
        """Buffers not yet allocated (made on demand: a small blob needs one small buffer)."""
        self.fetched = 0
        self.parts: list[Part] = []
        self._first_open = 0
        """Index in ``parts`` of the first incomplete part, as far as :meth:`_frontier` has looked."""
        self.streams = Streams(cap=parts, fixed=fixed)
        self.queue: deque[Part] = deque()
        """Parts no stream has taken yet, in file order (guarded by ``cond``)."""
        self.busy: set[int] = set()
        """``id`` of every part a stream is fetching (guarded by ``cond``): the ones a free stream may split."""
        self.counters: list[_Counter] = []
        """One per stream started: bytes received, each written by its own stream only."""
        self.running = 0
        """Streams not yet ended (guarded by ``cond``)."""
        self.fd = -1
        self.resumed_from_another_boot = False
        self.hash_error: BaseException | None = None
        self._last_progress = 0.0

    def reset(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- set-up ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        size = self.desc.size
        self.dir.mkdir(parents=True, exist_ok=True)
        loaded = state.load(self.dir, self.desc.digest, size)
        saved = loaded[0] if loaded else None
        if loaded is not None:
            self.resumed_from_another_boot = loaded[1] is None or loaded[1] != state.current_boot()
        if saved is None:
            self.parts = state.split(size, self.n_parts, self.min_part_size)
            self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if size:
                    _allocate(self.fd, size)
                state.save(self.dir, self.desc.digest, size, self.parts)
            except BaseException:  # a full disk (or Ctrl-C) before a byte arrived: keep no half-allocated file
                os.close(self.fd)
                self.fd = -1
                self.reset()
                raise
        else:
            self.parts = saved
            self.fd = os.open(self.data_path, os.O_RDWR)

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped()
        self._open()
        size = self.desc.size
        hasher = threading.Thread(target=self._hash_guarded, name="modelctl-hash", daemon=True)
        hasher.start()
        futures: list[Future[None]] = []
        try:
            pending = [p for p in self.parts if not p.complete]
            if pending:
                self.queue.extend(pending)
                pool = ThreadPoolExecutor(max_workers=max(1, self.n_parts), thread_name_prefix="modelctl-part")
                stopped = False
                try:
                    self._supervise(pool, futures)
                except Stopped:
                    stopped = True
                    raise
                except BaseException:
                    self.cancel.set()  # before the pool's shutdown waits for the workers
                    raise
                finally:
                    pool.shutdown(wait=not stopped, cancel_futures=True)  # a stop waited GRACE already
            with self.cond:
                self.cond.notify_all()
            hasher.join()
            if self.hash_error is not None:
                raise self.hash_error
            self._emit(force=True)
            if self.hashed != size:
                raise ModelctlError(f"internal error: hashed {self.hashed} of {size} bytes of {self.desc.digest}")
            actual = _digest.of_hasher(self.hasher)
            if actual != self.desc.digest:
                os.close(self.fd)
                self.fd = -1
                self.reset()  # the partial is garbage: never resume from it
                if self.resumed_from_another_boot:
                    raise _LostInCrash()
                raise DigestMismatch(self.desc.digest, actual, what=f"blob {self.desc.digest[:19]}")
        finally:
            self.cancel.set()
            with self.cond:
                self.cond.notify_all()
            hasher.join(timeout=GRACE)
            self._close([*futures], hasher)

    def _supervise(self, pool: ThreadPoolExecutor, futures: list[Future[None]]) -> None:
        """Run the streams (``futures`` receives each one started) and wait for them, saving the part state every
        SAVE_INTERVAL and steering the stream count while it is being probed; the first failure cancels the
        others, and so does the caller's ``stop`` (see the module docstring)."""
        saved = time.monotonic()
        self._add_streams(pool, futures)
        while True:
            done, not_done = wait(
                futures, timeout=PROBE_TICK if self.streams.probing else POLL, return_when=FIRST_EXCEPTION
            )
            if self.stop is not None and self.stop.is_set():
                self.cancel.set()
                self._abort_readers()
                wait(not_done, timeout=GRACE)
                self._save()
                raise Stopped()
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self.cancel.set()
                wait(not_done)
                self._save()
                raise self.hash_error or _first_error([f.exception() for f in failed])
            now = time.monotonic()
            if self.streams.probing:
                self._steer(now)
                self._add_streams(pool, futures)
                not_done = {f for f in futures if not f.done()}
            if not not_done or now - saved >= SAVE_INTERVAL:
                self._save()
                saved = now
            if not not_done:
                return

    # -- the streams --------------------------------------------------------------------------------------------
    def _steer(self, now: float) -> None:
        """Feed the stream controller this moment's byte count (see :mod:`modelctl.transfer.streams`)."""
        received = 0
        flowing = 0
        for counter in self.counters:
            received += counter.received
            flowing += counter.received > 0 and not counter.ended
        with self.cond:
            limit = self.hashed / self.hash_busy if self.hash_busy > 0 else None
            self.streams.observe(now, received, flowing, limit, self.hash_busy)

    def _add_streams(self, pool: ThreadPoolExecutor, futures: list[Future[None]]) -> None:
        """Start streams up to the controller's target, as far as there is work for them."""
        with self.cond:
            work = len(self.queue) + sum(
                1 for p in self.parts if id(p) in self.busy and state.can_split(p, self.buffer_size, self.min_part_size)
            )
            more = min(self.streams.target - self.running, work)
            counters = [_Counter() for _ in range(max(0, more))]
            self.running += len(counters)
            self.counters.extend(counters)
        futures.extend(pool.submit(self._run_stream, counter) for counter in counters)

    def _run_stream(self, counter: _Counter) -> None:
        """One stream: take the next part (or split a busy one) and fetch it, until there is no work left or the
        controller wants fewer streams."""
        try:
            while (part := self._take()) is not None:
                try:
                    self._fetch_part(part, counter)
                finally:
                    with self.cond:
                        self.busy.discard(id(part))
        finally:
            counter.ended = True

    def _merge_untouched(self, part: Part) -> None:
        """One stream for the rest of the blob: the parts after ``part`` that no byte of has arrived yet become
        part of it, so that one request fetches them. Parts only keep a few streams near the hash's frontier; each
        request costs the registry ~5 ms of CPU (docker-registry used 0.85 CPU-s serving a 2 GiB pull in 32 parts
        against 0.62 s for one request), which on two cores the sha256 is short of. (Under ``cond``.)"""
        while self.queue and self.queue[0].start == part.end and self.queue[0].done == 0:
            following = self.queue.popleft()
            self.parts.remove(following)
            part.end = following.end

    def _take(self) -> Part | None:
        """The next part for a stream; None (and the stream counted out) when it should end."""
        with self.cond:
            part: Part | None = None
            if self.running <= self.streams.target and not self.cancel.is_set():
                if self.queue:
                    part = self.queue.popleft()
                    if self.streams.settled and self.streams.target == 1:
                        self._merge_untouched(part)
                else:  # no part left to start: take the second half of the busy part with the most left
                    part = state.split_busy(self.parts, self.busy, self.buffer_size, self.min_part_size)
            if part is None:
                self.running -= 1
                return None
            self.busy.add(id(part))
            return part

    def _abort_readers(self) -> None:
        """End the reads the parts may be blocked in (a stalled link): each then fails and its part sees ``cancel``."""
        with self.cond:
            readers = list(self.readers)
        for reader in readers:
            abort = getattr(reader, "abort", None)
            if callable(abort):
                abort()

    def _close(self, futures: list[Future[None]], hasher: threading.Thread) -> None:
        """Close the partial's descriptor once no thread can use it: now, or (threads left behind by a stop) when
        the last of them ends. Closing it under a live thread could let its ``pwrite`` hit a reused descriptor."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        if all(f.done() for f in futures) and not hasher.is_alive():
            os.close(fd)
            return

        def close_later() -> None:
            wait(futures)
            hasher.join()
            os.close(fd)

        threading.Thread(target=close_later, name="modelctl-close", daemon=True).start()

    def _save(self) -> None:
        """Record what is written so far (with the boot id: see the module docstring on durability).

        No fdatasync: waiting for the disk cost more than the whole verified download (a durable 2 GiB write
        takes ~6.9 s on the CI disk, the pull ~3 s), and a kill -9 loses nothing that is in the page cache.
        """
        with self.cond:
            snapshot = [Part(p.start, p.end, p.done) for p in self.parts]
        if self.dir.exists():
            state.save(self.dir, self.desc.digest, self.desc.size, snapshot)

    # -- one part ---------------------------------------------------------------------------------------------
    def _fetch_part(self, part: Part, counter: _Counter) -> None:
        failures = 0
        while not part.complete:
            if self.cancel.is_set():
                raise _Cancelled()
            before = part.done
            try:
                self._stream(part, counter)
            except (_IgnoresRange, _Cancelled):
                raise
            except RegistryError as exc:
                if not exc.temporary:
                    raise
                failures = 0 if part.done > before else failures + 1
                if failures > self.retries:
                    raise
                self._backoff(failures, exc.retry_after)
            except OSError:
                raise  # local disk trouble: retrying will not help

    def _stream(self, part: Part, counter: _Counter) -> None:
        start = part.position
        with self.source.open_range(start, part.end - 1) as reader, self._open_reader(reader):
            if reader.total is not None and reader.total < self.desc.size:  # no retry can make up the difference
                raise IntegrityError(
                    f"the registry has {reader.total} bytes of blob {self.desc.digest[:19]} where the manifest "
                    f"says {self.desc.size}",
                    hint="the registry's copy is damaged (or its manifest is wrong): ask its owner to push the "
                    "model again",
                )
            if reader.offset != start or (reader.status == 200 and len(self.parts) > 1):
                raise _IgnoresRange()
            pos = start
            buffer = self._take_buffer()
            try:
                ended = False
                while pos < part.end and not ended:
                    if self.cancel.is_set():
                        raise _Cancelled()
                    view = memoryview(buffer)[: min(len(buffer), part.end - pos)]
                    filled, ended, broken = _fill(reader, view, counter)
                    written = 0
                    while written < filled:
                        written += os.pwrite(self.fd, view[written:filled], pos + written)
                    if filled and self._advance(part, pos, buffer, filled):
                        buffer = self._take_buffer()  # the hash thread owns the old one now
                    pos += filled
                    if broken is not None:
                        raise broken
            finally:
                self.buffers.put(buffer)
        if not part.complete:
            raise RegistryError(
                f"the registry closed the connection early for {self.desc.digest[:19]} "
                f"({part.done} of {part.length} bytes of a part)",
                temporary=True,
            )

    @contextmanager
    def _open_reader(self, reader: RangeReader) -> Iterator[None]:
        """Track ``reader`` while a part reads it, so that a stop can abort it."""
        with self.cond:
            self.readers.add(reader)
        try:
            if self.cancel.is_set():
                raise _Cancelled()
            yield
        finally:
            with self.cond:
                self.readers.discard(reader)

    def _take_buffer(self) -> bytearray:
        """A free buffer; waits while the hash thread holds them all (it always has work then)."""
        with self.cond:
            if self.buffers_left > 0 and self.buffers.empty():
                self.buffers_left -= 1
                return bytearray(self.buffer_size)
        while True:
            try:
                return self.buffers.get(timeout=0.2)
            except queue.Empty:
                if self.cancel.is_set():
                    raise _Cancelled() from None

    def _advance(self, part: Part, pos: int, buffer: bytearray, length: int) -> bool:
        """Count ``length`` bytes written at ``pos``; True when ``buffer`` went to the hash thread.

        A buffer written at the frontier goes to the hash thread even when the hash is behind (it reads back what
        lies before it first): the stream then waits for free buffers instead of racing ahead of the hash, which
        would make it read back everything from then on."""
        with self.cond:
            handed = pos == self._frontier()
            part.done += length
            self.fetched += length
            if handed:
                self.hash_queue.append((pos, buffer, length))
            self.cond.notify_all()
        self._emit()
        return handed

    def _backoff(self, failures: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else min(MAX_BACKOFF, 0.25 * 2**failures)
        delay = min(delay, 60.0) * (1.0 if retry_after is not None else random.uniform(0.5, 1.0))
        self.sleep(delay)

    # -- the hash frontier ------------------------------------------------------------------------------------
    def _frontier(self) -> int:
        """Where the written prefix ends (under ``cond``). The first incomplete part's index only moves forward (a
        split inserts after a busy part, so after it), so it is remembered instead of found again per buffer."""
        parts, i = self.parts, self._first_open
        while i < len(parts) and parts[i].complete:
            i += 1
        self._first_open = i
        return parts[i].position if i < len(parts) else self.desc.size

    def _hash_guarded(self) -> None:
        """The hash thread: a failure there (a read error of the partial) stops the parts, which may be waiting
        for buffers only this thread gives back, and is raised by :meth:`run`."""
        try:
            self._hash_loop()
        except BaseException as exc:
            self.hash_error = exc
            self.cancel.set()
            with self.cond:
                self.cond.notify_all()

    def _hash_loop(self) -> None:
        """Hash the written prefix in order: queued buffers as they are, any other range read back."""
        size = self.desc.size
        readback: memoryview | None = None
        length = 0
        while True:
            buffer: bytearray | None = None
            with self.cond:
                self.hashed += length  # the previous round's bytes: one lock per buffer, not two
                length = 0
                while True:
                    if self.cancel.is_set():
                        return  # a failure or a stop: the hash is of no use any more
                    if self.hash_queue and self.hash_queue[0][0] == self.claimed:
                        _, buffer, length = self.hash_queue.popleft()
                        self.claimed += length
                        break
                    limit = self.hash_queue[0][0] if self.hash_queue else self._frontier()
                    if limit > self.claimed:  # written, never handed over: read it back
                        start, length = self.claimed, min(limit - self.claimed, self.buffer_size)
                        self.claimed += length
                        break
                    if self.hashed >= size:
                        return
                    self.cond.wait(timeout=1.0)
            began = time.perf_counter()
            if buffer is not None:
                self.hasher.update(memoryview(buffer)[:length])  # outside the lock: no part thread waits for it
                self.buffers.put(buffer)
            else:  # into one reused buffer: a fresh 8 MiB ``pread`` result cost a mmap and 2,048 page faults
                if readback is None:
                    readback = memoryview(bytearray(self.buffer_size))
                if os.preadv(self.fd, [readback[:length]], start) != length:
                    raise ModelctlError(f"internal error: short read of the partial {self.desc.digest[:19]}")
                self.hasher.update(readback[:length])
            self.hash_busy += time.perf_counter() - began

    def _emit(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        with self.cond:
            done = sum(p.done for p in self.parts)
            fetched = self.fetched
        self.progress(Progress(self.desc.digest, self.desc.size, done, fetched, self.streams.target))


def _allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for the partial, so that a full disk shows now rather than half-way; where the
    filesystem cannot preallocate, a sparse file (a full disk then shows as a failed write)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if atomic.disk_full(exc):
            raise
        os.ftruncate(fd, size)
    except AttributeError:
        os.ftruncate(fd, size)


def _fill(reader: RangeReader, view: memoryview, counter: _Counter) -> tuple[int, bool, RegistryError | None]:
    """Read into ``view`` until it is full, the body ends, or FILL_TIME passed (so a slow link still shows
    progress and saves state). Returns (bytes, body ended, the error that cut it short): bytes that arrived
    before a broken connection are still written and counted, so the retry resumes after them."""
    filled = 0
    deadline = time.monotonic() + FILL_TIME
    while filled < len(view):
        try:
            got = reader.read_into(view[filled:])
        except RegistryError as exc:
            return filled, True, exc
        if got == 0:
            return filled, True, None
        filled += got
        counter.received += got
        if time.monotonic() >= deadline:
            break
    return filled, False, None


def _first_error(errors: list[BaseException | None]) -> BaseException:
    real = [e for e in errors if e is not None and not isinstance(e, _Cancelled)]
    if any(isinstance(e, _IgnoresRange) for e in real):
        return next(e for e in real if isinstance(e, _IgnoresRange))
    return real[0] if real else _Cancelled()
