"""How many parallel streams one blob's download runs: few at first, more only while they add throughput.

A link that caps each connection (a CDN, a per-flow shaper) moves N times as much over N streams; loopback, a LAN
or any link this machine itself saturates moves no more, and there every extra stream only costs CPU (socket
buffers, kernel copies, and bytes that land out of the hash's order and are read back from the page cache). Which
kind of link a pull is on cannot be known in advance, so it is measured: the download starts with ``START``
stream(s), measures the bytes received over a short window once every stream is flowing, doubles the streams and
measures again. It keeps growing (x4 once a step scaled almost perfectly, ``SURE``) while the new streams bring at
least ``GROW`` of their fair share; a step that raised the throughput by less than ``KEEP`` is undone (the extra
streams stop after their current part), and one in between keeps as many streams as the throughput it reached is
worth.
``cap`` (``MODELCTL_PARTS``) is never exceeded; ``fixed`` (``MODELCTL_FIXED_PARTS``) runs ``cap`` streams from the
start, without probing.

Bytes received are not the whole story on a fast link: a stream that races ahead of the sha256 only writes bytes
that must be read back later. So each window's rate is capped by ``limit``, what the hash can take (the engine
measures it), and more streams than the hash can use never look like a gain; and once the hash thread was busy
through a window (``HASH_BOUND``: the streams wait for it, not for the link), no stream is added, so a fast link is
not even probed.

Pure logic: the engine feeds :meth:`Streams.observe` its clock and byte counts and starts or retires streams to
meet :attr:`Streams.target`; the unit tests drive it with a fake clock and a model of the link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

START = 1
"""Streams a download starts with: one is what a fast link wants (no bytes out of the hash's order)."""
WINDOW = 0.1
"""Seconds of throughput measured at each stream count, at least. The window opens once every stream has received
bytes and as long again has passed (a new connection's slow start), and lasts at least twice that warm-up: a far
server measures over a longer window than loopback."""
MAX_SETTLE = 1.0
"""The longest wait after the first bytes before a window opens (half the longest window)."""
WARM_LIMIT = 3.0
"""Longest wait for the new streams' first bytes (a slow connect or a short tail of parts) before measuring."""
GROW = 0.5
"""A step that brought at least this share of what it would bring on a capped link is followed by another."""
SURE = 0.8
"""A step that brought this share (a link that caps each connection) is followed by a x4 step instead of x2."""
HASH_BOUND = 0.9
"""A window through which the hash thread was busy at least this share of the time ends the growth: the sha256 is
the bottleneck, and no stream count makes the download faster than it."""
KEEP = 0.25
"""A step that raised the throughput by less than this fraction is undone: the link did not reward it (and
measurements on a busy machine wander by about that much)."""


@dataclass(slots=True)
class _Window:
    streams: int
    start: float
    """When the measurement starts (after the warm-up)."""
    length: float
    received: int | None = None
    """Bytes received when it started; None until then."""
    hashing: float = 0.0
    """The hash thread's busy seconds when it started."""


@dataclass(slots=True)
class Streams:
    """The stream count of one download. ``observe`` as often as convenient (every ~50 ms while probing)."""

    cap: int
    fixed: bool = False
    start: int = START
    window: float = WINDOW
    target: int = field(init=False)
    """How many streams should run now."""
    settled: bool = field(init=False)
    """Probing is over: ``target`` stays as it is."""
    rates: list[tuple[int, float]] = field(init=False, default_factory=list)
    """(streams, bytes/s) of every window measured, in order: what the decisions were based on."""
    _window: _Window | None = field(init=False, default=None)
    _warm_since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.cap = max(1, self.cap)
        self.target = self.cap if self.fixed else max(1, min(self.start, self.cap))
        self.settled = self.fixed or self.cap == 1

    @property
    def probing(self) -> bool:
        return not self.settled

    def observe(
        self, now: float, received: int, flowing: int, limit: float | None = None, hashing: float | None = None
    ) -> int:
        """Account for ``received`` (all bytes received so far by every stream) at time ``now``, with ``flowing``
        streams running that have received bytes, ``limit`` bytes/s the hash can take and ``hashing`` seconds the
        hash thread has been busy so far (None: unknown); returns the stream count wanted from now on."""
        if self.settled:
            return self.target
        window = self._window
        if window is None:
            if self._warm_since is None:
                self._warm_since = now
            warm = now - self._warm_since
            if flowing < self.target and warm < WARM_LIMIT:
                return self.target  # the new streams are still connecting: their absence is not the link's answer
            settle = min(warm, MAX_SETTLE)
            self._window = _Window(self.target, now + settle, max(self.window, 2 * settle))
            return self.target
        if now < window.start:
            return self.target
        if window.received is None:
            window.start, window.received, window.hashing = now, received, hashing or 0.0
            return self.target
        elapsed = now - window.start
        if elapsed < window.length:
            return self.target
        rate = (received - window.received) / elapsed
        self.rates.append((window.streams, rate if limit is None else min(rate, limit)))
        self._window = None
        self._warm_since = None
        hash_bound = hashing is not None and hashing - window.hashing >= HASH_BOUND * elapsed
        self._decide(grow=not hash_bound)
        return self.target

    def _decide(self, *, grow: bool = True) -> None:
        streams, rate = self.rates[-1]
        step = 2
        if len(self.rates) >= 2:
            before, before_rate = self.rates[-2]
            # the throughput reached, counted in streams as productive as the previous ones
            worth = rate / (before_rate / before) if before_rate > 0 else float(streams)
            share = (worth - before) / (streams - before)
            if rate < before_rate * (1 + KEEP):
                self.target, self.settled = before, True  # the link did not reward the extra streams
                return
            if share < GROW:  # they helped some: keep as many as the gain is worth, probe no further
                self.target, self.settled = max(before + 1, min(streams, math.ceil(worth - 0.1))), True
                return
            step = 4 if share >= SURE else 2
        if streams >= self.cap or not grow:
            self.settled = True
            return
        self.target = min(self.cap, streams * step)
