"""The download engine: parallel, resumable, verified-while-downloading blob fetches into a content store."""

from modelctl.transfer.download import BlobSink, Progress, RangeReader, RangeSource, Stopped, download
from modelctl.transfer.plan import Plan, check_space, kept, plan, room_needed

__all__ = [
    "BlobSink",
    "Plan",
    "Progress",
    "RangeReader",
    "RangeSource",
    "Stopped",
    "check_space",
    "download",
    "kept",
    "plan",
    "room_needed",
]
