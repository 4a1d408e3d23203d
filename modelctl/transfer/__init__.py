"""The download engine: parallel, resumable, verified-while-downloading blob fetches into a content store."""

from modelctl.transfer.download import BlobSink, Progress, RangeReader, RangeSource, download
from modelctl.transfer.plan import Plan, check_space, plan

__all__ = ["BlobSink", "Plan", "Progress", "RangeReader", "RangeSource", "check_space", "download", "plan"]
