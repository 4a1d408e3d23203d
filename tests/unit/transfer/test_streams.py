"""The stream controller's decisions, driven by a fake clock and a model of the link (pure logic, no sockets).

The model: every stream the controller asks for starts at once and receives its first bytes ``connect`` seconds
later, then ramps up to its rate over ``ramp`` seconds (TCP slow start); ``link(n)`` is what ``n`` flowing streams
receive together, per second. The engine's real loop feeds ``observe`` the same way, every PROBE_TICK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from modelctl.transfer import state
from modelctl.transfer.state import Part
from modelctl.transfer.streams import WARM_LIMIT, Streams

MIB = 1 << 20
TICK = 0.025


@dataclass
class Run:
    targets: list[tuple[float, int]] = field(default_factory=list)
    """(time, target) at every change."""
    most: int = 0

    @property
    def final(self) -> int:
        return self.targets[-1][1]

    def reached(self, streams: int) -> float:
        """When the target first reached ``streams``."""
        return next(t for t, n in self.targets if n >= streams)


def drive(
    streams: Streams,
    link: Callable[[int], float],
    *,
    seconds: float = 6.0,
    connect: float = 0.005,
    ramp: float = 0.0,
    limit: float | None = None,
    hash_busy: float = 0.0,
) -> Run:
    run = Run(targets=[(0.0, streams.target)], most=streams.target)
    started: list[float] = [0.0] * streams.target
    received = 0.0
    now = 0.0
    while now < seconds:
        now += TICK
        flowing = [s for s in started if now - s >= connect]
        speed = [min(1.0, (now - s - connect) / ramp) if ramp else 1.0 for s in flowing]
        per_stream = link(len(flowing)) / len(flowing) if flowing else 0.0
        received += per_stream * sum(speed) * TICK
        target = streams.observe(now, int(received), len(flowing), limit, hash_busy * now)
        if target > len(started):
            started += [now] * (target - len(started))
        elif target < len(started):
            del started[target:]  # the engine retires streams as they finish their parts
        if target != run.targets[-1][1]:
            run.targets.append((now, target))
        run.most = max(run.most, target)
    return run


def capped(per_connection: float, total: float = float("inf")) -> Callable[[int], float]:
    """A CDN: each connection at most ``per_connection`` bytes/s, all together at most ``total``."""
    return lambda n: min(n * per_connection, total)


def flat(total: float) -> Callable[[int], float]:
    """Loopback or a LAN the machine saturates with one stream: more streams move no more."""
    return lambda n: total if n else 0.0


def test_a_capped_link_grows_to_the_cap_quickly() -> None:
    run = drive(Streams(cap=8), capped(16 * MIB))
    assert run.final == 8 and run.most == 8
    assert run.reached(8) < 0.6, run.targets  # 1 -> 2 -> 8, one short window each


def test_never_more_than_the_cap() -> None:
    run = drive(Streams(cap=6), capped(16 * MIB))
    assert run.final == 6 and run.most == 6


def test_a_fast_link_stays_at_one_stream() -> None:
    run = drive(Streams(cap=8), flat(1000 * MIB))
    assert run.targets == [(0.0, 1), (run.targets[1][0], 2), (run.targets[2][0], 1)]  # one probe, undone
    assert run.final == 1


def test_streams_the_hash_cannot_use_are_not_a_gain() -> None:
    """Bytes received grow with streams (each writes into the page cache), but the sha256 takes 700 MiB/s: what
    the extra streams receive would only be read back later."""
    run = drive(Streams(cap=8), capped(600 * MIB), limit=700 * MIB)
    assert run.final == 1


def test_one_stream_that_keeps_the_hash_busy_is_not_probed() -> None:
    """Loopback: one stream fills the buffers faster than the sha256 empties them, so the hash thread is busy all
    the time; no second stream is tried (its bytes would only be read back)."""
    run = drive(Streams(cap=8), flat(700 * MIB), limit=720 * MIB, hash_busy=0.97)
    assert run.targets == [(0.0, 1)]


def test_a_capped_link_leaves_the_hash_idle_and_grows() -> None:
    run = drive(Streams(cap=8), capped(16 * MIB), limit=1000 * MIB, hash_busy=0.05)
    assert run.final == 8


def test_a_link_that_saturates_at_three_streams_keeps_three() -> None:
    run = drive(Streams(cap=8), capped(16 * MIB, total=48 * MIB))
    assert run.final == 3 and run.most == 8  # 1 -> 2 -> 8 measured 3 streams' worth: the other 5 retire


def test_a_small_gain_is_kept_without_probing_further() -> None:
    run = drive(Streams(cap=8), lambda n: {1: 100, 2: 140}.get(n, 150) * MIB)
    assert run.final == 2 and run.most == 2


def test_a_far_server_is_measured_after_its_slow_start() -> None:
    """0.3 s to the first byte and 0.3 s of slow start: a window taken at once would see the new streams at a
    fraction of their rate and stop growing."""
    run = drive(Streams(cap=8), capped(16 * MIB), connect=0.3, ramp=0.3, seconds=10)
    assert run.final == 8


def test_streams_that_never_flow_are_measured_after_the_warm_limit() -> None:
    streams = Streams(cap=8)
    assert streams.observe(0.0, 0, 0) == 1
    assert streams.observe(WARM_LIMIT / 2, 0, 0) == 1 and not streams.rates
    streams.observe(WARM_LIMIT + 0.01, 0, 0)  # gives up waiting: the window opens after as long again
    streams.observe(2 * WARM_LIMIT + 0.1, 0, 0)
    streams.observe(4 * WARM_LIMIT, 0, 0)
    assert streams.rates == [(1, 0.0)]


@pytest.mark.parametrize("cap", [1, 4, 8])
def test_fixed_runs_the_cap_from_the_start(cap: int) -> None:
    streams = Streams(cap=cap, fixed=True)
    assert streams.target == cap and streams.settled
    run = drive(streams, flat(1000 * MIB))
    assert run.targets == [(0.0, cap)]


def test_a_cap_of_one_does_not_probe() -> None:
    streams = Streams(cap=1)
    assert streams.settled
    assert drive(streams, capped(16 * MIB)).targets == [(0.0, 1)]


# -- splitting a busy part for a free stream -----------------------------------------------------------------


def test_split_busy_takes_the_second_half_of_the_part_with_most_left() -> None:
    parts = [Part(0, 100, 90), Part(100, 300, 20), Part(300, 400, 0)]
    busy = {id(parts[0]), id(parts[1])}
    second = state.split_busy(parts, busy, 10, 20)
    assert second == Part(215, 300)  # 120..300 is left, 10 bytes may be in flight: cut in the middle of 130..300
    assert [(p.start, p.end) for p in parts] == [(0, 100), (100, 215), (215, 300), (300, 400)]
    assert parts[1].done == 20


def test_split_busy_leaves_parts_too_small_to_share() -> None:
    parts = [Part(0, 100, 50)]
    assert state.split_busy(parts, {id(parts[0])}, 10, 25) is None  # 40 left after the guard: not two pieces of 25
    assert parts == [Part(0, 100, 50)]
    idle = [Part(0, 1000)]
    assert state.split_busy(idle, set(), 10, 25) is None  # nobody is fetching it: it is taken whole instead
