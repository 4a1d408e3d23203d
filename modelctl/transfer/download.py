"""One blob, fetched as parallel Range parts into one preallocated file, hashed while it arrives, then committed.

Threads, not asyncio: ``os.pwrite``, ``hashlib`` and socket reads release the GIL on large buffers, so a few
threads keep a fast link busy. The sha256 follows the contiguous written prefix (the *frontier*): one thread reads
back, with ``os.pread``, bytes just written (page cache, not disk) and hashes them outside the lock, so no part
thread ever waits for the hash. Large blobs are cut into more parts than streams, taken in order, so the frontier
keeps pace with the download and little is left to hash at the end. No second pass over the file.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelctl.digest import hex_of
from modelctl.errors import DigestMismatch, ModelctlError, RegistryError
from modelctl.oci.descriptor import Descriptor
from modelctl.transfer import state
from modelctl.transfer.state import Part

SAVE_INTERVAL = 0.5
PROGRESS_INTERVAL = 0.1
HASH_WINDOW = 8 << 20
MAX_BACKOFF = 10.0


class RangeReader(Protocol):
    status: int
    offset: int
    total: int | None

    def iter_chunks(self, size: int = ...) -> Iterator[bytes]: ...


class RangeSource(Protocol):
    def open_range(self, start: int, end: int | None) -> AbstractContextManager[RangeReader]: ...


class BlobSink(Protocol):
    def has_blob(self, digest: str, size: int | None = None) -> bool: ...
    def blob_path(self, digest: str) -> Path: ...
    def commit_blob(self, path: Path, digest: str) -> Path: ...


@dataclass(frozen=True, slots=True)
class Progress:
    digest: str
    total: int
    done: int
    fetched_this_run: int


class _IgnoresRange(Exception):
    """The server answered a ranged request with the whole body: fall back to one stream from byte 0."""


class _Cancelled(Exception):
    pass


def download(
    desc: Descriptor,
    source: RangeSource,
    sink: BlobSink,
    *,
    ingest_dir: Path,
    parts: int,
    min_part_size: int,
    stall_timeout: float,
    retries: int,
    progress: Callable[[Progress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetch ``desc`` unless the store has it; resume a partial; verify; commit. Returns the blob's path."""
    import filelock

    ingest_dir.mkdir(parents=True, exist_ok=True)
    hex_digest = hex_of(desc.digest)
    with filelock.FileLock(str(ingest_dir / f"{hex_digest}.lock")):
        # Another process may have fetched it while we waited for the lock: one download per blob.
        if sink.has_blob(desc.digest, desc.size):
            return sink.blob_path(desc.digest)
        job = _Job(desc, source, ingest_dir / hex_digest, parts, min_part_size, stall_timeout, retries, progress, sleep)
        try:
            job.run()
        except _IgnoresRange:
            single = desc.size or 1
            job = _Job(desc, source, ingest_dir / hex_digest, 1, single, stall_timeout, retries, progress, sleep)
            job.reset()
            job.run()
        committed = sink.commit_blob(job.data_path, desc.digest)
        job.reset()  # the data moved into the store; drop the now stale state.json with its directory
        return committed


class _Job:
    def __init__(
        self,
        desc: Descriptor,
        source: RangeSource,
        directory: Path,
        parts: int,
        min_part_size: int,
        stall_timeout: float,
        retries: int,
        progress: Callable[[Progress], None] | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.desc = desc
        self.source = source
        self.dir = directory
        self.data_path = directory / state.DATA_FILE
        self.n_parts = parts
        self.min_part_size = min_part_size
        self.stall_timeout = stall_timeout  # enforced as the HTTP read timeout of the source's client
        self.retries = retries
        self.progress = progress
        self.sleep = sleep
        self.cond = threading.Condition()
        self.cancel = threading.Event()
        self.hasher = hashlib.sha256()
        self.hashed = 0
        self.fetched = 0
        self.parts: list[Part] = []
        self.fd = -1
        self._last_progress = 0.0

    def reset(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- set-up ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        size = self.desc.size
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = state.load(self.dir, self.desc.digest, size)
        if saved is None:
            self.parts = state.split(size, self.n_parts, self.min_part_size)
            self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            if size:
                try:
                    os.posix_fallocate(self.fd, 0, size)
                except (AttributeError, OSError):
                    os.ftruncate(self.fd, size)
            state.save(self.dir, self.desc.digest, size, self.parts)
        else:
            self.parts = saved
            self.fd = os.open(self.data_path, os.O_RDWR)

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        self._open()
        size = self.desc.size
        hasher = threading.Thread(target=self._hash_loop, name="modelctl-hash", daemon=True)
        hasher.start()
        try:
            pending = [p for p in self.parts if not p.complete]
            if pending:
                streams = max(1, min(self.n_parts, len(pending)))
                with ThreadPoolExecutor(max_workers=streams, thread_name_prefix="modelctl-part") as pool:
                    futures = [pool.submit(self._fetch_part, p) for p in pending]
                    try:
                        while True:
                            done, not_done = wait(futures, timeout=SAVE_INTERVAL, return_when=FIRST_EXCEPTION)
                            self._save()
                            failed = [f for f in done if f.exception() is not None]
                            if failed:
                                self.cancel.set()
                                wait(not_done)
                                self._save()
                                raise _first_error([f.exception() for f in failed])
                            if not not_done:
                                break
                    except BaseException:
                        self.cancel.set()  # before the pool's shutdown waits for the workers (Ctrl-C included)
                        raise
            with self.cond:
                self.cond.notify_all()
            hasher.join()
            self._emit(force=True)
            if self.hashed != size:
                raise ModelctlError(f"internal error: hashed {self.hashed} of {size} bytes of {self.desc.digest}")
            actual = "sha256:" + self.hasher.hexdigest()
            if actual != self.desc.digest:
                os.close(self.fd)
                self.fd = -1
                self.reset()  # the partial is garbage: never resume from it
                raise DigestMismatch(self.desc.digest, actual, what=f"blob {self.desc.digest[:19]}")
            os.fsync(self.fd)
        finally:
            self.cancel.set()
            with self.cond:
                self.cond.notify_all()
            hasher.join(timeout=5)
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def _save(self) -> None:
        """Flush the data written so far, then record it: the saved state never claims bytes a crash could lose.

        Called every SAVE_INTERVAL while parts run, so the disk writes back continuously and the final fsync
        before commit has little left to do (one big fsync at the end cost ~1.8 s per GiB here).
        """
        with self.cond:
            snapshot = [Part(p.start, p.end, p.done) for p in self.parts]
        if self.fd >= 0:
            os.fdatasync(self.fd)
        if self.dir.exists():
            state.save(self.dir, self.desc.digest, self.desc.size, snapshot)

    # -- one part ---------------------------------------------------------------------------------------------
    def _fetch_part(self, part: Part) -> None:
        failures = 0
        while not part.complete:
            if self.cancel.is_set():
                raise _Cancelled()
            before = part.done
            try:
                self._stream(part)
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

    def _stream(self, part: Part) -> None:
        start = part.position
        with self.source.open_range(start, part.end - 1) as reader:
            if reader.offset != start or (reader.status == 200 and len(self.parts) > 1):
                raise _IgnoresRange()
            pos = start
            for chunk in reader.iter_chunks(1 << 20):
                if self.cancel.is_set():
                    raise _Cancelled()
                room = part.end - pos
                if len(chunk) > room:
                    raise RegistryError(
                        f"the registry sent more bytes than asked for {self.desc.digest[:19]}", temporary=True
                    )
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(self.fd, view, pos)
                    view = view[written:]
                    pos += written
                self._advance(part, pos - len(chunk), chunk)
        if not part.complete:
            raise RegistryError(
                f"the registry closed the connection early for {self.desc.digest[:19]} "
                f"({part.done} of {part.length} bytes of a part)",
                temporary=True,
            )

    def _advance(self, part: Part, pos: int, chunk: bytes) -> None:
        with self.cond:
            part.done += len(chunk)
            self.fetched += len(chunk)
            self.cond.notify_all()
        self._emit()

    def _backoff(self, failures: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else min(MAX_BACKOFF, 0.25 * 2**failures)
        delay = min(delay, 60.0) * (1.0 if retry_after is not None else random.uniform(0.5, 1.0))
        self.sleep(delay)

    # -- the hash frontier ------------------------------------------------------------------------------------
    def _frontier(self) -> int:
        for p in self.parts:
            if not p.complete:
                return p.position
        return self.desc.size

    def _hash_loop(self) -> None:
        size = self.desc.size
        while True:
            with self.cond:
                while self.hashed == self._frontier() and self.hashed < size and not self.cancel.is_set():
                    self.cond.wait(timeout=1.0)
                if self.hashed >= size or (self.cancel.is_set() and self.hashed == self._frontier()):
                    return
                start = self.hashed
                end = min(self._frontier(), start + HASH_WINDOW)
            data = os.pread(self.fd, end - start, start)
            self.hasher.update(data)  # outside the lock: the part threads never wait for the hash
            with self.cond:
                self.hashed += len(data)

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
        self.progress(Progress(self.desc.digest, self.desc.size, done, fetched))


def _first_error(errors: list[BaseException | None]) -> BaseException:
    real = [e for e in errors if e is not None and not isinstance(e, _Cancelled)]
    if any(isinstance(e, _IgnoresRange) for e in real):
        return next(e for e in real if isinstance(e, _IgnoresRange))
    return real[0] if real else _Cancelled()
