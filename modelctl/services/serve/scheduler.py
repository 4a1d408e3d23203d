"""Which loaded models must go so that another one fits: the server's memory rule, as pure arithmetic.

Memory is counted per device (``CPU RAM``, each GPU) in bytes, as the fit check's plan gives it. A set of models
fits when, on every device, the sum of their needs is at most the device's capacity. To make room, idle models go
first, least recently used first; busy ones (answering, or with requests queued) only when the idle ones are not
enough, and the caller then waits for them to finish. A model that does not fit on its own is never loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Needs = Mapping[str, int]
"""Bytes per device name."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Resident:
    """A loaded model, as the eviction rule sees it."""

    key: str
    needs: Needs
    last_used: float
    """When its last request ended (monotonic seconds): the least recently used goes first."""
    busy: bool
    """Answering, or with requests waiting: evicting it means waiting for them."""


def total(needs: Iterable[Needs]) -> dict[str, int]:
    """The sum of several models' needs, per device."""
    summed: dict[str, int] = {}
    for one in needs:
        for device, size in one.items():
            summed[device] = summed.get(device, 0) + size
    return summed


def fits(needs: Needs, capacity: Needs, *, beside: Iterable[Needs] = ()) -> bool:
    """Whether ``needs`` fits in ``capacity`` together with the models ``beside`` it."""
    used = total(beside)
    return all(size <= 0 or used.get(device, 0) + size <= capacity.get(device, 0) for device, size in needs.items())


def short_of(needs: Needs, capacity: Needs) -> dict[str, int]:
    """Bytes missing per device for ``needs`` alone (empty when it fits alone)."""
    return {d: size - capacity.get(d, 0) for d, size in needs.items() if size > 0 and size > capacity.get(d, 0)}


def victims(residents: Sequence[Resident], needs: Needs, capacity: Needs) -> list[str] | None:
    """The loaded models to unload, in order, so that ``needs`` fits beside the rest; None if even unloading every
    one would not make room. Idle models go first (least recently used first), then busy ones (the same order);
    the list stops as soon as the rest leave room, so nothing is unloaded for nothing."""
    order = sorted(residents, key=lambda r: (r.busy, r.last_used))
    staying = list(order)
    chosen: list[str] = []
    while not fits(needs, capacity, beside=(r.needs for r in staying)):
        if not staying:
            return None
        chosen.append(staying.pop(0).key)
    # Unloading in LRU order may have taken one that the later ones made unnecessary: keep it if room allows.
    for key in list(reversed(chosen)):
        back = next(r for r in order if r.key == key)
        if fits(needs, capacity, beside=[*(r.needs for r in staying), back.needs]):
            chosen.remove(key)
            staying.append(back)
    return chosen


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive(value: object) -> float | None:
    """Seconds a model stays loaded after a request, from Ollama's ``keep_alive``: a number of seconds, or a Go
    duration (``"5m"``, ``"1h30m"``, ``"300ms"``); negative means forever (returned as ``inf``); ValueError when it
    is neither. None stays None (the server's default applies)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise ValueError(value) from None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(value)
    return float("inf") if seconds < 0 else seconds
