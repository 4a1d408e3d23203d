"""What ``save`` wrote or ``load`` imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelctl.digest import Digest

Progress = Callable[[Digest, int], None]
"""Called with (digest, bytes) after each blob is written or read."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchivedModel:
    reference: str
    digest: Digest

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "id": self.model_id}

    @property
    def model_id(self) -> str:
        """What ``list`` shows as ID: the first 12 hex digits of the manifest digest."""
        return self.digest.hex[:12]


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveResult:
    """What ``save`` wrote or ``load`` imported."""

    models: tuple[ArchivedModel, ...]
    referrers: int
    """Manifests attached to the models (model cards) that travelled along."""
    blobs: int
    bytes: int
    new_blobs: int = 0
    """load only: blobs the store did not have before."""
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """load only: archive members ignored (files outside the layout, blobs nothing references)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [m.to_json() for m in self.models],
            "referrers": self.referrers,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "new_blobs": self.new_blobs,
            "skipped": list(self.skipped),
        }
