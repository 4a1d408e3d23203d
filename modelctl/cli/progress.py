"""Pull progress: rich bars on a terminal, plain periodic lines otherwise (CI logs), nothing with --quiet.

The engine calls ``progress`` from several threads; every renderer here is thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from modelctl.cli.render import size

if TYPE_CHECKING:
    from modelctl import artifact, transfer
    from modelctl.reference import Reference


class QuietReporter:
    def resolved(self, ref: Reference, model: artifact.Model, to_fetch: int) -> None:
        pass

    def progress(self, event: transfer.Progress) -> None:
        pass

    def warning(self, message: str) -> None:
        print(f"modelctl: warning: {message}", file=sys.stderr)

    def close(self) -> None:
        pass


class LineReporter(QuietReporter):
    """One line per blob every ``interval`` seconds, and one when it completes."""

    def __init__(self, interval: float = 5.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def resolved(self, ref: Reference, model: artifact.Model, to_fetch: int) -> None:
        what = f"{size(to_fetch)} to fetch" if to_fetch else "up to date"
        print(f"{ref.short}: {size(model.size)}, {what}", file=sys.stderr, flush=True)

    def progress(self, event: transfer.Progress) -> None:
        now = time.monotonic()
        with self._lock:
            self._started.setdefault(event.digest, now)
            done = event.done >= event.total
            if not done and now - self._last.get(event.digest, 0.0) < self._interval:
                return
            self._last[event.digest] = now
            elapsed = max(now - self._started[event.digest], 1e-3)
        pct = 100.0 * event.done / event.total if event.total else 100.0
        rate = event.fetched_this_run / elapsed
        streams = f" ({event.streams} streams)" if event.streams > 1 else ""
        amount = f"{size(event.done)}/{size(event.total)}"
        print(
            f"  {event.digest.hex[:12]}: {pct:5.1f}% {amount} {size(int(rate))}/s{streams}",
            file=sys.stderr,
            flush=True,
        )


class BarReporter(QuietReporter):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def resolved(self, ref: Reference, model: artifact.Model, to_fetch: int) -> None:
        what = f"{size(to_fetch)} to fetch" if to_fetch else "up to date"
        self._progress.console.print(f"{ref.short}: {size(model.size)}, {what}")

    def progress(self, event: transfer.Progress) -> None:
        with self._lock:
            task = self._tasks.get(event.digest)
            if task is None:
                task = self._progress.add_task(event.digest.hex[:12], total=event.total)
                self._tasks[event.digest] = task
        self._progress.update(task, completed=event.done)

    def warning(self, message: str) -> None:
        self._progress.console.print(f"[yellow]modelctl: warning:[/] {message}")

    def close(self) -> None:
        self._progress.stop()


def reporter(*, quiet: bool) -> QuietReporter:
    if quiet:
        return QuietReporter()
    if sys.stderr.isatty():
        return BarReporter()
    return LineReporter()
