"""How much memory the server may give its models, per device, at the moment it decides a load.

The fit check reads free memory; but once the server has loaded models, their memory is no longer free, and
judging the next model against what is left would shrink its context or refuse it for memory that the server
itself can give back. So the capacity counts the server's own models as available: at most what was free when the
server started, and at most what is free now plus what the server's models hold (another program may have taken
memory since). ``--memory`` caps the RAM further.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from modelctl.fit.devices import Device
from modelctl.fit.plan import GPU_MARGIN


class Budget:
    """The devices with the memory the server may use for models (their ``free`` rewritten)."""

    def __init__(self, detect: Callable[[], Sequence[Device]], *, memory: int | None = None) -> None:
        self._detect = detect
        self._memory = memory
        self._start = {d.name: d.free for d in detect()}

    def devices(self, held: Mapping[str, int]) -> tuple[Device, ...]:
        """The devices as the fit check should see them, ``held`` being what the server's models use now."""
        found = []
        for device in self._detect():
            free = min(self._start.get(device.name, device.free), device.free + held.get(device.name, 0))
            if not device.is_gpu and self._memory is not None:
                free = min(free, self._memory)
            found.append(replace(device, free=max(free, 0)))
        return tuple(found)


def capacity(devices: Sequence[Device]) -> dict[str, int]:
    """Bytes models may use together on each device: what is free, less the margin the fit plan keeps on GPUs."""
    return {d.name: max(d.free - (GPU_MARGIN if d.is_gpu else 0), 0) for d in devices}
