"""The download engine: parallel, resumable, verified-while-downloading blob fetches into a content store.

The engine itself (:mod:`modelctl.transfer.download`: its threads and futures) loads on first use of one of its
names, so that a pull with nothing to fetch plans without it. Its entry point is ``transfer.download.download``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl.transfer.plan import Plan, check_space, kept, plan, room_needed

if TYPE_CHECKING:
    from modelctl.transfer.download import BlobSink, Progress, RangeReader, RangeSource, Stopped

_ENGINE = frozenset({"BlobSink", "Progress", "RangeReader", "RangeSource", "Stopped"})

__all__ = [
    "BlobSink",
    "Plan",
    "Progress",
    "RangeReader",
    "RangeSource",
    "Stopped",
    "check_space",
    "kept",
    "plan",
    "room_needed",
]


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from modelctl.transfer import download as engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
