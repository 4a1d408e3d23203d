"""A service's work on a few threads, stopped at once by Ctrl-C or SIGTERM.

Python delivers a signal to the main thread only, as an exception; the worker threads never see it. A plain
``ThreadPoolExecutor`` block then waits for every worker to finish its whole job (a pull went on to download the
rest of a blob, minutes on a large one). Here the main thread sets the workers' ``stop`` event instead, gives them
``GRACE`` to put their work in a resumable state (the download engine saves its part state), and re-raises without
waiting for the rest: whatever a worker still does after that can only redo work the saved state does not claim.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from modelctl.errors import INTERRUPTS
from modelctl.transfer.download import GRACE as ENGINE_GRACE
from modelctl.transfer.download import POLL

T = TypeVar("T")
R = TypeVar("R")

GRACE = POLL + ENGINE_GRACE + 0.2
"""Long enough for the download engine to notice ``stop``, abort its reads and save its state."""


def each(
    fn: Callable[[T], R], items: Sequence[T], *, workers: int, stop: threading.Event, grace: float = GRACE
) -> list[R]:
    """``fn`` over ``items`` on up to ``workers`` threads, results in order.

    A failure does not cut the others short (their work is kept); the first one is raised once all have ended.
    An interrupt in the calling (main) thread sets ``stop``, waits at most ``grace`` (0 when the workers have
    nothing to save) and is re-raised."""
    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="modelctl-work")
    futures: list[Future[R]] = []
    interrupted = False
    try:
        futures = [pool.submit(fn, item) for item in items]
        results: list[R] = []
        error: BaseException | None = None
        for future in futures:
            try:
                results.append(future.result())
            except INTERRUPTS:
                raise
            except BaseException as exc:  # keep the first failure; the others finish or fail on their own
                error = error or exc
        if error is not None:
            raise error
        return results
    except INTERRUPTS:
        interrupted = True
        stop.set()
        wait(futures, timeout=grace)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
