"""The serve pool with fake models: turns in arrival order, a bounded queue, loads and evictions in order, a
crashed worker dropped and reloaded, idle models unloaded, a cancelled answer ended before the next starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelctl.errors import DoesNotFit, RuntimeCrashed
from modelctl.fit.devices import Device
from modelctl.runtime.conversation import Message, Sampling, Stats
from modelctl.runtime.engine import LoadSpec
from modelctl.services.serve.catalog import Listed, Placement
from modelctl.services.serve.pool import Pool, QueueFull

MiB = 1 << 20


class FakeAnswer:
    def __init__(self, engine: FakeEngine, pieces: int, delay: float) -> None:
        self.engine = engine
        self.pieces = pieces
        self.delay = delay
        self.prompt_tokens = 3
        self.text = ""
        self.finish_reason: str | None = None
        self.cancelled = threading.Event()

    @property
    def stats(self) -> Stats:
        return Stats(
            prompt_tokens=3,
            completion_tokens=len(self.text),
            time_to_first_token=0.0,
            generation_seconds=0.0,
            decoded_tokens=0,
        )

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        for _ in range(self.pieces):
            if self.engine.crash:
                self.engine.alive = False
                raise RuntimeCrashed("the runtime crashed (SIGKILL)")
            if self.cancelled.is_set() or self.engine.cancelled.is_set():
                self.finish_reason = "interrupted"
                return
            time.sleep(self.delay)
            self.text += "x"
            yield "x"
        self.finish_reason = "stop"


class FakeEngine:
    def __init__(self, name: str, *, pieces: int = 3, delay: float = 0.01) -> None:
        self.name = name
        self.pid = 1
        self.n_ctx = 512
        self.alive = True
        self.crash = False
        self.pieces = pieces
        self.delay = delay
        self.closed = False
        self.close_delay = 0.0
        self.cancelled = threading.Event()
        self.answers: list[FakeAnswer] = []

    def count(self, messages: list[Message]) -> int:
        return 3

    def chat(self, messages: list[Message], sampling: Sampling) -> FakeAnswer:
        self.cancelled.clear()
        answer = FakeAnswer(self, self.pieces, self.delay)
        self.answers.append(answer)
        return answer

    def generate(self, prompt: str, sampling: Sampling) -> FakeAnswer:
        return self.chat([], sampling)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0] for _ in texts], len(texts)

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        time.sleep(self.close_delay)
        self.closed = True


class FakeModels:
    """Each model needs ``ram`` MiB; ``log`` records loads."""

    def __init__(self, ram: Mapping[str, int], **engine: Any) -> None:
        self.ram = ram
        self.engine = engine
        self.log: list[tuple[str, str]] = []
        self.engines: list[FakeEngine] = []

    def identify(self, name: str) -> Listed:
        return Listed(
            key=name, name=name, short=name, size=0, created=None, parameters=None, quantization=None, architecture=None
        )

    def placement(self, model: Listed, devices: tuple[Device, ...]) -> Placement:
        return Placement(
            key=model.key,
            name=model.name,
            short=model.short,
            load=LoadSpec(model_path=Path("/x"), n_ctx=512),
            needs={"CPU RAM": self.ram[model.key] * MiB},
            fit={},
            suggestion="use a smaller model",
            sampling=Sampling(),
            system=None,
        )

    def start(self, placement: Placement) -> FakeEngine:
        engine = FakeEngine(placement.key, **self.engine)
        self.engines.append(engine)
        return engine


class FixedBudget:
    def __init__(self, ram: int) -> None:
        self.ram = ram

    def devices(self, held: Mapping[str, int]) -> tuple[Device, ...]:
        return (Device(name="CPU RAM", kind="cpu", total=self.ram * MiB, free=self.ram * MiB),)


def run(ram: int, models: FakeModels, body: Callable[[Pool], Coroutine[Any, Any, None]], **options: Any) -> list[str]:
    """Run ``body`` against a pool; returns its load/unload log."""
    events: list[str] = []

    async def main() -> None:
        with ThreadPoolExecutor(16) as executor:
            pool = Pool(
                models,
                FixedBudget(ram),
                executor=executor,
                on_event=lambda what, model, detail: events.append(f"{what} {model}"),
                **options,
            )
            pool.start()
            try:
                await body(pool)
            finally:
                await pool.close()

    asyncio.run(main())
    return [e for e in events if e.split()[0] in ("loaded", "unload", "crash")]


async def answer(pool: Pool, name: str, order: list[str], label: str) -> str:
    async with pool.lease(name) as lease:
        order.append(label)
        generation = lease.stream(lambda engine: engine.chat([], Sampling()))
        try:
            return await generation.text()
        finally:
            await generation.close()


def test_requests_for_one_model_take_turns_in_arrival_order() -> None:
    order: list[str] = []

    async def body(pool: Pool) -> None:
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(answer(pool, "a", order, f"r{i}")))
            await asyncio.sleep(0.005)  # arrive in this order
        assert await asyncio.gather(*tasks) == ["xxx"] * 6

    assert run(1000, FakeModels({"a": 100}), body) == ["loaded a"]
    assert order == [f"r{i}" for i in range(6)]


def test_a_full_queue_is_refused_with_a_retry_time() -> None:
    async def body(pool: Pool) -> None:
        first = asyncio.create_task(answer(pool, "a", [], "1"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(answer(pool, "a", [], "2"))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as full:
            await answer(pool, "a", [], "3")
        assert full.value.retry_after >= 1
        await asyncio.gather(first, second)

    run(1000, FakeModels({"a": 100}, pieces=20, delay=0.01), body, max_queue=1)


def test_models_that_do_not_fit_together_take_turns_and_none_starves() -> None:
    order: list[str] = []

    async def body(pool: Pool) -> None:
        tasks = []
        for label, model in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("a3", "a"), ("b3", "b")]:
            tasks.append(asyncio.create_task(answer(pool, model, order, label)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)

    log = run(150, FakeModels({"a": 100, "b": 100}, pieces=5, delay=0.01), body)
    assert order == ["a1", "a2", "b1", "b2", "a3", "b3"]
    assert log == ["loaded a", "unload a", "loaded b", "unload b", "loaded a", "unload a", "loaded b"]


def test_models_that_fit_together_stay_loaded() -> None:
    async def body(pool: Pool) -> None:
        await answer(pool, "a", [], "")
        await answer(pool, "b", [], "")
        await answer(pool, "a", [], "")
        assert sorted(m["name"] for m in pool.loaded()) == ["a", "b"]

    assert run(250, FakeModels({"a": 100, "b": 100}), body) == ["loaded a", "loaded b"]


def test_the_least_recently_used_idle_model_makes_room() -> None:
    async def body(pool: Pool) -> None:
        for name in ("a", "b", "a", "c"):
            await answer(pool, name, [], "")
        assert sorted(m["name"] for m in pool.loaded()) == ["a", "c"]

    assert run(250, FakeModels({"a": 100, "b": 100, "c": 100}), body) == [
        "loaded a",
        "loaded b",
        "unload b",
        "loaded c",
    ]


def test_a_model_too_big_for_the_budget_is_refused() -> None:
    async def body(pool: Pool) -> None:
        with pytest.raises(DoesNotFit) as refused:
            await answer(pool, "big", [], "")
        assert "does not fit" in str(refused.value) and "use a smaller model" in str(refused.value)
        assert pool.loaded() == []

    assert run(100, FakeModels({"big": 300}), body) == []


def test_a_crashed_worker_fails_its_request_and_is_reloaded_by_the_next() -> None:
    models = FakeModels({"a": 100})

    async def body(pool: Pool) -> None:
        await answer(pool, "a", [], "")
        models.engines[0].crash = True
        with pytest.raises(RuntimeCrashed):
            await answer(pool, "a", [], "")
        assert await answer(pool, "a", [], "") == "xxx"

    assert run(1000, models, body) == ["loaded a", "crash a", "loaded a"]
    assert models.engines[0].closed and len(models.engines) == 2


def test_a_worker_killed_while_idle_is_reloaded() -> None:
    models = FakeModels({"a": 100})

    async def body(pool: Pool) -> None:
        await answer(pool, "a", [], "")
        models.engines[0].alive = False
        assert await answer(pool, "a", [], "") == "xxx"

    assert run(1000, models, body) == ["loaded a", "crash a", "loaded a"]


def test_idle_models_unload_after_their_keep_alive() -> None:
    async def body(pool: Pool) -> None:
        async with pool.lease("a", keep_alive=0.05):
            pass
        async with pool.lease("b", keep_alive=float("inf")):
            pass
        await asyncio.sleep(0.3)
        assert [m["name"] for m in pool.loaded()] == ["b"]
        assert pool.loaded()[0]["expires_at"] is None

    assert run(1000, FakeModels({"a": 100, "b": 100}), body) == ["loaded a", "loaded b", "unload a"]


def test_a_cancelled_request_ends_its_answer_before_the_next_starts() -> None:
    models = FakeModels({"a": 100}, pieces=1000, delay=0.005)

    async def body(pool: Pool) -> None:
        async def reader() -> None:
            async with pool.lease("a") as lease:
                generation = lease.stream(lambda engine: engine.chat([], Sampling()))
                try:
                    async for _ in generation:
                        pass
                finally:
                    await generation.close()

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.1)
        task.cancel()  # what aiohttp does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task
        first = models.engines[0].answers[0]
        assert first.finish_reason == "interrupted" and len(first.text) < 1000
        models.engines[0].pieces = 2
        assert await answer(pool, "a", [], "") == "xx"  # the turn is free and the next answer is its own

    run(1000, models, body)


def test_stop_unloads_now() -> None:
    async def body(pool: Pool) -> None:
        await answer(pool, "a", [], "")
        assert await pool.stop("a") == ["a"]
        assert pool.loaded() == []

    assert run(1000, FakeModels({"a": 100}), body) == ["loaded a", "unload a"]


def test_a_client_gone_while_its_model_loads_leaves_it_loaded_for_the_next() -> None:
    class SlowModels(FakeModels):
        def start(self, placement: Placement) -> FakeEngine:
            time.sleep(0.2)
            return super().start(placement)

    models = SlowModels({"a": 100})

    async def body(pool: Pool) -> None:
        first = asyncio.create_task(answer(pool, "a", [], ""))
        await asyncio.sleep(0.05)
        first.cancel()  # while the model loads
        with pytest.raises(asyncio.CancelledError):
            await first
        assert [m["name"] for m in pool.loaded()] == ["a"] and not pool.slots["a"].busy
        assert await answer(pool, "a", [], "") == "xxx"

    assert run(1000, models, body) == ["loaded a"]
    assert len(models.engines) == 1  # loaded once, not leaked nor loaded again


class GatedModels(FakeModels):
    """Placement and loading each wait for the test to open a gate (a slow fit check, a slow load)."""

    def __init__(self, ram: Mapping[str, int]) -> None:
        super().__init__(ram)
        self.placing, self.place = threading.Event(), threading.Event()
        self.loading, self.load = threading.Event(), threading.Event()

    def placement(self, model: Listed, devices: tuple[Device, ...]) -> Placement:
        self.placing.set()
        assert self.place.wait(10)
        return super().placement(model, devices)

    def start(self, placement: Placement) -> FakeEngine:
        self.loading.set()
        assert self.load.wait(10)
        return super().start(placement)


def test_a_request_that_waited_to_place_its_model_is_not_overtaken_by_a_later_one() -> None:
    models = GatedModels({"a": 100})
    order: list[str] = []

    async def body(pool: Pool) -> None:
        first = asyncio.create_task(answer(pool, "a", order, "a1"))
        assert await asyncio.to_thread(models.placing.wait, 10)
        second = asyncio.create_task(answer(pool, "a", order, "a2"))  # before a1's model is in the pool
        await asyncio.sleep(0.05)
        models.place.set()
        assert await asyncio.to_thread(models.loading.wait, 10)
        third = asyncio.create_task(answer(pool, "a", order, "a3"))  # while it loads
        await asyncio.sleep(0.05)
        models.load.set()
        await asyncio.gather(first, second, third)

    assert run(1000, models, body) == ["loaded a"]
    assert order == ["a1", "a2", "a3"]


def test_requests_that_wait_for_a_reload_keep_their_order_while_it_loads() -> None:
    class SlowReload(FakeModels):
        def __init__(self, ram: Mapping[str, int]) -> None:
            super().__init__(ram, pieces=5, delay=0.01)
            self.loading, self.load = threading.Event(), threading.Event()

        def start(self, placement: Placement) -> FakeEngine:
            if any(engine.name == placement.key for engine in self.engines):  # a reload
                self.loading.set()
                assert self.load.wait(10)
            return super().start(placement)

    models = SlowReload({"a": 100, "b": 100})
    order: list[str] = []

    async def body(pool: Pool) -> None:
        await answer(pool, "a", order, "a1")
        tasks = []
        for label, model in [("b1", "b"), ("a2", "a"), ("a3", "a")]:  # a goes for b; a2 and a3 wait to reload it
            tasks.append(asyncio.create_task(answer(pool, model, order, label)))
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(models.loading.wait, 10)
        tasks.append(asyncio.create_task(answer(pool, "a", order, "a4")))  # while a2 reloads it
        await asyncio.sleep(0.05)
        models.load.set()
        await asyncio.gather(*tasks)

    assert run(150, models, body) == ["loaded a", "unload a", "loaded b", "unload b", "loaded a"]
    assert order == ["a1", "b1", "a2", "a3", "a4"]


def test_a_crash_noticed_by_a_request_that_is_then_cancelled_is_still_reported_and_reloaded() -> None:
    models = FakeModels({"a": 100})

    async def body(pool: Pool) -> None:
        await answer(pool, "a", [], "")
        models.engines[0].crash = True
        models.engines[0].close_delay = 0.3
        crashed = asyncio.create_task(answer(pool, "a", [], ""))
        await asyncio.sleep(0.1)  # it failed, and its model is being dropped
        crashed.cancel()  # its client hung up meanwhile
        with pytest.raises((asyncio.CancelledError, RuntimeCrashed)):
            await crashed
        assert await answer(pool, "a", [], "") == "xxx"

    assert run(1000, models, body) == ["loaded a", "crash a", "loaded a"]
