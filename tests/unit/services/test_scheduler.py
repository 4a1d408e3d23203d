"""The serve scheduler's memory rule (which loaded models go to make room) and Ollama's keep_alive values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl.fit.devices import Device
from modelctl.services.serve.budget import Budget, capacity
from modelctl.services.serve.scheduler import Resident, fits, keep_alive, short_of, victims

MiB = 1 << 20


def resident(key: str, ram: int, used: float, *, busy: bool = False, gpu: int = 0) -> Resident:
    needs = {"CPU RAM": ram * MiB}
    if gpu:
        needs["CUDA0"] = gpu * MiB
    return Resident(key=key, needs=needs, last_used=used, busy=busy)


ROOM = {"CPU RAM": 1000 * MiB, "CUDA0": 500 * MiB}


def test_nothing_goes_when_it_fits_beside_the_others() -> None:
    loaded = [resident("a", 300, 1.0), resident("b", 300, 2.0)]
    assert victims(loaded, {"CPU RAM": 300 * MiB}, ROOM) == []


def test_the_least_recently_used_idle_model_goes_first() -> None:
    loaded = [resident("new", 300, 5.0), resident("old", 300, 1.0), resident("mid", 300, 3.0)]
    assert victims(loaded, {"CPU RAM": 300 * MiB}, ROOM) == ["old"]
    assert victims(loaded, {"CPU RAM": 600 * MiB}, ROOM) == ["old", "mid"]


def test_busy_models_go_only_when_the_idle_ones_are_not_enough() -> None:
    loaded = [resident("busy-old", 400, 1.0, busy=True), resident("idle-new", 400, 9.0)]
    assert victims(loaded, {"CPU RAM": 500 * MiB}, ROOM) == ["idle-new"]
    assert victims(loaded, {"CPU RAM": 900 * MiB}, ROOM) == ["idle-new", "busy-old"]


def test_a_model_unloaded_for_nothing_is_kept() -> None:
    # LRU order would take "small" first, but only "big" leaves room: small stays
    loaded = [resident("small", 100, 1.0), resident("big", 800, 2.0)]
    assert victims(loaded, {"CPU RAM": 700 * MiB}, ROOM) == ["big"]


def test_every_device_counts() -> None:
    loaded = [resident("gpu-heavy", 100, 1.0, gpu=400), resident("ram-heavy", 700, 2.0)]
    assert victims(loaded, {"CPU RAM": 100 * MiB, "CUDA0": 300 * MiB}, ROOM) == ["gpu-heavy"]


def test_a_model_that_cannot_fit_alone_gets_none() -> None:
    assert victims([resident("a", 100, 1.0)], {"CPU RAM": 2000 * MiB}, ROOM) is None
    assert not fits({"CPU RAM": 2000 * MiB}, ROOM)
    assert short_of({"CPU RAM": 2000 * MiB, "CUDA0": 10}, ROOM) == {"CPU RAM": 1000 * MiB}


@given(
    st.lists(st.tuples(st.integers(0, 600), st.floats(0, 100), st.booleans()), max_size=6),
    st.integers(0, 1200),
)
def test_the_chosen_victims_always_make_room(models: list[tuple[int, float, bool]], need: int) -> None:
    loaded = [resident(f"m{i}", ram, used, busy=busy) for i, (ram, used, busy) in enumerate(models)]
    wanted = {"CPU RAM": need * MiB}
    chosen = victims(loaded, wanted, ROOM)
    if need * MiB > ROOM["CPU RAM"]:
        assert chosen is None
        return
    assert chosen is not None
    staying = [r.needs for r in loaded if r.key not in chosen]
    assert fits(wanted, ROOM, beside=staying)
    # nothing is unloaded for nothing: putting any one victim back would leave too little room
    for key in chosen:
        back = next(r for r in loaded if r.key == key)
        assert not fits(wanted, ROOM, beside=[*staying, back.needs])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("300", 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        ("0", 0.0),
        (-1, math.inf),
        ("-1", math.inf),
        ("-5m", math.inf),
    ],
)
def test_keep_alive_values(value: object, seconds: float | None) -> None:
    assert keep_alive(value) == (pytest.approx(seconds) if seconds not in (None, math.inf) else seconds)


@pytest.mark.parametrize("value", ["soon", "5 m", "5x", "", "m5", True, [], {}])
def test_bad_keep_alive_values(value: object) -> None:
    with pytest.raises(ValueError):
        keep_alive(value)


def test_the_budget_counts_the_servers_own_models_as_available() -> None:
    free = {"CPU RAM": 8000 * MiB, "CUDA0": 4000 * MiB}

    def detect() -> list[Device]:
        return [
            Device(name="CUDA0", kind="cuda", total=8000 * MiB, free=free["CUDA0"]),
            Device(name="CPU RAM", kind="cpu", total=16000 * MiB, free=free["CPU RAM"]),
        ]

    budget = Budget(detect, memory=6000 * MiB)
    free["CPU RAM"] -= 3000 * MiB  # our models took it
    free["CUDA0"] -= 1000 * MiB
    devices = budget.devices({"CPU RAM": 3000 * MiB, "CUDA0": 1000 * MiB})
    assert {d.name: d.free for d in devices} == {"CPU RAM": 6000 * MiB, "CUDA0": 4000 * MiB}  # --memory caps RAM
    free["CPU RAM"] -= 4000 * MiB  # another program took more
    devices = budget.devices({"CPU RAM": 3000 * MiB, "CUDA0": 1000 * MiB})
    assert {d.name: d.free for d in devices}["CPU RAM"] == 4000 * MiB
    assert capacity(devices) == {"CUDA0": 4000 * MiB - (512 << 20), "CPU RAM": 4000 * MiB}
