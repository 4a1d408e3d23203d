"""The loaded models: one worker process each, loaded when a request first names a model, unloaded when idle.

Requests for one model take turns in arrival order (an ``asyncio.Lock`` wakes its waiters first in, first out),
also across a load or reload: while an earlier request waits to place the model, a later one queues behind it;
at most ``max_queue`` may wait for a model, the next one is refused with :class:`QueueFull` (HTTP 503). Loads are
decided one at a time, in arrival order, under one lock: the model's placement (``run``'s settings, judged against
the server's budget) gives what it needs per device, and :func:`~.scheduler.victims` names the loaded models that
must go first. A model chosen to go takes no new requests (they wait for its reload), finishes those already
queued, and is unloaded; so a steady stream of requests for one model cannot starve another.

A worker that dies fails the request in flight with RuntimeCrashed; the model is dropped, and the next request
for it loads it again. Blocking calls (a load, a worker's answer) run in threads; pieces of an answer reach the
event loop through :class:`Generation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from modelctl.errors import DoesNotFit, ModelctlError, NotFound, RuntimeCrashed
from modelctl.fit.devices import Device
from modelctl.runtime.conversation import Message, Sampling, Stats
from modelctl.services.serve import scheduler
from modelctl.services.serve.budget import capacity
from modelctl.services.serve.catalog import Listed, Placement

T = TypeVar("T")


class QueueFull(ModelctlError):
    """Too many requests wait for one model: the client should come back after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class Answer(Protocol):
    """A streamed answer (the runtime's :class:`~modelctl.runtime.engine.Answer`)."""

    prompt_tokens: int
    text: str
    finish_reason: str | None

    @property
    def stats(self) -> Stats: ...
    def cancel(self) -> None: ...
    def __iter__(self) -> Iterator[str]: ...


class Engine(Protocol):
    """A loaded model (the runtime's :class:`~modelctl.runtime.process.WorkerEngine`)."""

    pid: int
    n_ctx: int

    @property
    def alive(self) -> bool: ...
    def count(self, messages: list[Message]) -> int: ...
    def chat(self, messages: list[Message], sampling: Sampling) -> Answer: ...
    def generate(self, prompt: str, sampling: Sampling) -> Answer: ...
    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...


class Models(Protocol):
    """The catalog, as the pool uses it."""

    def identify(self, name: str) -> Listed: ...
    def placement(self, model: Listed, devices: tuple[Device, ...]) -> Placement: ...
    def start(self, placement: Placement) -> Any: ...


class Devices(Protocol):
    def devices(self, held: Mapping[str, int]) -> tuple[Device, ...]: ...


@dataclass(eq=False, kw_only=True)
class Slot:
    """One model in the pool: loading, ready, or gone."""

    placement: Placement
    keep_alive: float
    engine: Any = None
    state: str = "loading"
    """``loading``, ``ready``, ``closed`` (unloaded or crashed)."""
    leaving: bool = False
    """Chosen to be unloaded: new requests wait for its reload, queued ones are still answered."""
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None
    """Monotonic deadline for unloading while idle; None while busy or kept forever."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    loaded_at: float = field(default_factory=time.time)
    requests: int = 0

    @property
    def busy(self) -> bool:
        return self.turn.locked() or self.waiting > 0

    def info(self) -> dict[str, Any]:
        """What ``ps`` shows of it."""
        until = None
        if self.expires_at is not None:
            until = time.time() + max(self.expires_at - time.monotonic(), 0.0)
        placement = self.placement
        return {
            "name": placement.short,
            "reference": placement.name,
            "key": placement.key,
            "state": self.state,
            "leaving": self.leaving,
            "busy": self.turn.locked(),
            "queued": self.waiting,
            "memory": dict(placement.needs),
            "context": placement.load.n_ctx,
            "gpu_layers": placement.load.n_gpu_layers,
            "expires_at": until,
            "keep_alive": None if self.keep_alive == float("inf") else self.keep_alive,
            "loaded_at": self.loaded_at,
            "requests": self.requests,
            "pid": getattr(self.engine, "pid", None),
        }


Event = Callable[[str, str, str], None]
"""(what, model, detail): ``load``, ``loaded``, ``unload`` or ``crash``, for the server's log."""


class Pool:
    """The server's loaded models; every method runs on the event loop."""

    def __init__(
        self,
        models: Models,
        budget: Devices,
        *,
        executor: Executor,
        keep_alive: float = 300.0,
        max_queue: int = 64,
        force: bool = False,
        on_event: Event | None = None,
    ) -> None:
        self.models = models
        self.budget = budget
        self.executor = executor
        self.keep_alive = keep_alive
        self.max_queue = max_queue
        self.force = force
        self.on_event = on_event or (lambda what, model, detail: None)
        self.slots: dict[str, Slot] = {}
        self._placing = asyncio.Lock()
        self._waiting: dict[str, int] = {}
        self._placers: dict[str, int] = {}
        """Requests per model that wait for ``_placing`` (to load it, or to learn an earlier one did): while any
        does, a later request for the model may not queue on its turn directly, or it would be ahead of them."""
        self._wake = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._durations: dict[str, float] = {}

    # -- running blocking work ------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread; if the caller is cancelled meanwhile, the call still finishes first (a load
        or an unload must not be left half done), then the cancellation goes on."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))
        return await _finish(future)

    # -- requests -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, name: str, *, keep_alive: float | None = None) -> AsyncIterator[Lease]:
        """Wait for the turn of the model ``name`` names (loading it first when needed) and hold it."""
        # On the loop, not in a thread: the queue's order is the order requests arrive in (a stat and a dict
        # lookup once the name is known; the first time, a read of the store's index and the model's manifest).
        model = self.models.identify(name)
        slot = await self._acquire(model)
        started = time.monotonic()
        try:
            yield Lease(self, slot, name)
        except RuntimeCrashed as exc:
            await self._drop(slot, exc.message)
            raise
        finally:
            if slot.state == "ready" and not slot.engine.alive:  # died, and the handler told its client itself
                await self._drop(slot, "the worker died")
            elif slot.state == "ready":
                self._release(slot, keep_alive, time.monotonic() - started)

    async def _acquire(self, model: Listed) -> Slot:
        key = model.key
        waiting = self._waiting.get(key, 0)
        if waiting >= self.max_queue:
            raise QueueFull(
                f"{waiting} requests already wait for {model.short}",
                retry_after=self._retry_after(key, waiting),
                hint="retry later, or serve with a larger --max-queue",
            )
        self._waiting[key] = waiting + 1
        try:
            while True:
                slot = self.slots.get(key)
                # An earlier request that waits to place this model is ahead of this one even if the model is
                # in the pool by now: it must queue first, so this one goes the same way, behind it.
                if slot is None or slot.leaving or slot.state == "closed" or self._placers.get(key, 0):
                    slot, placed = await self._place(model)
                    if placed:
                        return slot
                # loaded by an earlier request meanwhile: queue for it now, with no await between
                slot.waiting += 1
                try:
                    await slot.turn.acquire()
                finally:
                    slot.waiting -= 1
                if slot.state == "ready" and not slot.engine.alive:  # killed while idle: load it again
                    await self._drop(slot, "the worker was gone")
                    continue
                if slot.state == "ready":
                    slot.expires_at = None
                    return slot
                slot.turn.release()
        finally:
            self._waiting[key] -= 1

    def _release(self, slot: Slot, keep_alive: float | None, seconds: float) -> None:
        slot.requests += 1
        if keep_alive is not None:
            slot.keep_alive = keep_alive
        previous = self._durations.get(slot.placement.key)
        self._durations[slot.placement.key] = seconds if previous is None else 0.7 * previous + 0.3 * seconds
        self._idle(slot)

    def _idle(self, slot: Slot) -> None:
        """Give up the turn; the keep-alive clock starts."""
        slot.last_used = time.monotonic()
        if slot.keep_alive != float("inf"):
            slot.expires_at = slot.last_used + slot.keep_alive
        if slot.turn.locked():
            slot.turn.release()
        self._wake.set()

    def _retry_after(self, key: str, waiting: int) -> int:
        """Seconds until a place in the queue is likely free: the requests ahead times the usual request time."""
        return max(1, min(int(self._durations.get(key, 5.0) * (waiting + 1) + 0.999), 3600))

    # -- loading and unloading ------------------------------------------------------------------------------

    def held(self) -> dict[str, int]:
        """Bytes per device the loaded models use (by their plans)."""
        return scheduler.total(s.placement.needs for s in self.slots.values() if s.state != "closed")

    async def _place(self, model: Listed) -> tuple[Slot, bool]:
        """Load ``model``, unloading others first if it does not fit beside them: (its slot, True) with the turn
        held; or (the slot, False) if it got loaded while this request waited for its turn to place (the request
        then queues on the slot before any later one can)."""
        key = model.key
        self._placers[key] = self._placers.get(key, 0) + 1
        waiting = True
        try:
            async with self._placing:
                slot = self.slots.get(key)
                if slot is not None and not slot.leaving and slot.state != "closed":
                    return slot, False
                if slot is not None:
                    await self._unload(slot, "")  # its memory is still held: wait for it to go
                devices = await self.call(self.budget.devices, self.held())
                placement = await self.call(self.models.placement, model, devices)
                room = capacity(devices)
                if not self.force and not scheduler.fits(placement.needs, room):
                    short = scheduler.short_of(placement.needs, room)
                    missing = ", ".join(f"{device} by {size / (1 << 20):.0f} MiB" for device, size in short.items())
                    raise DoesNotFit(
                        f"{model.short} does not fit in the memory this server may use ({missing})",
                        hint=placement.suggestion or "use a smaller --ctx-size or a smaller variant of the model",
                    )
                residents = [
                    scheduler.Resident(key=s.placement.key, needs=s.placement.needs, last_used=s.last_used, busy=s.busy)
                    for s in self.slots.values()
                    if s.state != "closed"
                ]
                chosen = scheduler.victims(residents, placement.needs, room)
                if chosen is None:  # --force: it cannot fit even alone, so it loads alone
                    chosen = [r.key for r in residents]
                for victim in chosen:
                    await self._unload(self.slots[victim], f"to make room for {model.short}")
                slot = Slot(placement=placement, keep_alive=self.keep_alive)
                await slot.turn.acquire()
                self.slots[model.key] = slot
                self._placers[key] -= 1  # first in its turn: later requests may queue behind it now
                waiting = False
                self.on_event("load", placement.short, _memory(placement.needs))
                loading = asyncio.get_running_loop().run_in_executor(self.executor, self.models.start, placement)
                gone = False
                try:
                    try:
                        slot.engine = await asyncio.shield(loading)
                    except asyncio.CancelledError:  # the client left: the load goes on, the model stays for the next
                        gone = True
                        slot.engine = await loading
                except BaseException as exc:
                    slot.state = "closed"
                    self.slots.pop(model.key, None)
                    slot.closed.set()
                    slot.turn.release()
                    self.on_event("failed", placement.short, str(exc))
                    raise
                slot.state = "ready"
                slot.loaded_at = time.time()
                self.on_event("loaded", placement.short, f"context {placement.load.n_ctx}")
                if gone:
                    self._idle(slot)
                    raise asyncio.CancelledError
                return slot, True
        finally:
            if waiting:
                self._placers[key] -= 1

    async def _unload(self, slot: Slot, reason: str) -> None:
        """Unload ``slot`` once the requests queued for it are answered; new ones wait for a reload."""
        if slot.leaving or slot.state == "closed":
            await slot.closed.wait()
            return
        slot.leaving = True
        await slot.turn.acquire()
        try:
            if slot.engine is not None:
                await self.call(slot.engine.close)
        finally:
            slot.state = "closed"
            if self.slots.get(slot.placement.key) is slot:
                del self.slots[slot.placement.key]
            slot.closed.set()
            slot.turn.release()
            self.on_event("unload", slot.placement.short, reason)

    async def _drop(self, slot: Slot, reason: str) -> None:
        """Forget a model whose worker died (its turn is held by the caller or free)."""
        if slot.state == "closed":
            return
        slot.state = "closed"
        if self.slots.get(slot.placement.key) is slot:
            del self.slots[slot.placement.key]
        self.on_event("crash", slot.placement.short, reason)
        try:  # the caller may be cancelled meanwhile (its client hung up): the rest is still done
            if slot.engine is not None:
                with contextlib.suppress(Exception):
                    await self.call(slot.engine.close)
        finally:
            slot.closed.set()
            if slot.turn.locked():
                slot.turn.release()

    async def stop(self, name: str) -> list[str]:
        """Unload the model ``name`` names now (after the requests already queued for it); NotFound if not loaded."""
        model = await self.call(self.models.identify, name)
        slot = self.slots.get(model.key)
        if slot is None or slot.state == "closed":
            raise NotFound(f"{model.short} is not loaded", hint="see the loaded models: modelctl ps")
        await self._unload(slot, "stopped")
        return [model.short]

    def loaded(self) -> list[dict[str, Any]]:
        return [slot.info() for slot in self.slots.values() if slot.state != "closed"]

    # -- idle unloading -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """Unload models idle past their keep-alive; sleeps until the next deadline or a request ends."""
        while True:
            now = time.monotonic()
            deadline: float | None = None
            for slot in list(self.slots.values()):
                if slot.state != "ready" or slot.leaving or slot.busy or slot.expires_at is None:
                    continue
                if slot.expires_at <= now:
                    asyncio.get_running_loop().create_task(self._unload(slot, "idle"))
                else:
                    deadline = slot.expires_at if deadline is None else min(deadline, slot.expires_at)
            self._wake.clear()
            timeout = None if deadline is None else max(deadline - now, 0.01)
            woken = asyncio.ensure_future(self._wake.wait())
            try:  # not wait_for: a cancelled wait_for can hang on Python 3.11 when the event fires at once
                await asyncio.wait({woken}, timeout=timeout)
            finally:
                woken.cancel()

    async def close(self) -> None:
        """Unload everything (at shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        slots = list(self.slots.values())
        for slot in slots:
            slot.leaving = True
        for slot in slots:
            if slot.engine is not None:
                with contextlib.suppress(Exception):
                    await self.call(slot.engine.close)
            slot.state = "closed"
        self.slots.clear()


class Lease:
    """The turn of one model: what a request may ask of it while it holds the turn."""

    def __init__(self, pool: Pool, slot: Slot, name: str) -> None:
        self.pool = pool
        self.slot = slot
        self.name = name
        """The model as the client named it (every answer names it so)."""
        self.placement = slot.placement
        self.engine: Engine = slot.engine

    def stream(self, start: Callable[[Engine], Answer]) -> Generation:
        """Start an answer in a thread; iterate the Generation for its pieces on the event loop."""
        return Generation(self.pool, self.engine, start)

    async def count(self, messages: list[Message]) -> int:
        return await self.pool.call(self.engine.count, messages)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return await self.pool.call(self.engine.embed, texts)


class Generation:
    """One answer generated in a worker thread, its pieces handed to the event loop as they come.

    ``async for piece in generation`` yields the text; :meth:`close` (always, in a ``finally``) cancels an answer
    that is still running (the client went away) and waits until the worker has ended it, so that the model's next
    request starts clean.
    """

    def __init__(self, pool: Pool, engine: Engine, start: Callable[[Engine], Answer]) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.answer: Answer | None = None
        self.first_piece: float | None = None
        self.started = time.monotonic()
        self._done = False
        self._future = self._loop.run_in_executor(pool.executor, self._work, start)

    def _work(self, start: Callable[[Engine], Answer]) -> None:
        def put(item: tuple[str, Any]) -> None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

        try:
            answer = start(self._engine)
            self.answer = answer
            for piece in answer:
                put(("piece", piece))
            put(("end", None))
        except BaseException as exc:
            put(("error", exc))

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        kind, value = await self._queue.get()
        if kind == "piece":
            if self.first_piece is None:
                self.first_piece = time.monotonic()
            return str(value)
        self._done = True
        await self._future
        if kind == "error":
            raise value
        raise StopAsyncIteration

    async def text(self) -> str:
        """The whole answer (for a request that does not stream)."""
        return "".join([piece async for piece in self])

    async def close(self) -> None:
        if not self._future.done():
            if self.answer is not None:
                self.answer.cancel()
            else:
                self._engine.cancel()
        with contextlib.suppress(Exception):
            await _finish(self._future)


async def _finish(future: asyncio.Future[T]) -> T:
    """Await ``future`` to its end even if this task is cancelled meanwhile; then re-raise the cancellation."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await future
        raise


def _memory(needs: Mapping[str, int]) -> str:
    return ", ".join(f"{size / (1 << 20):.0f} MiB {device}" for device, size in needs.items() if size > 0)
