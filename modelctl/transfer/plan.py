"""What a pull still has to fetch, and whether the disk can hold it: decided before the first byte moves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelctl import atomic
from modelctl.digest import Digest
from modelctl.errors import NoSpace
from modelctl.oci.descriptor import Descriptor
from modelctl.transfer import state

MARGIN = 64 << 20
"""Head-room kept free beyond the blobs themselves (state files, index rewrites, the file system's own needs)."""


class HasBlob(Protocol):
    def has_blob(self, digest: Digest, size: int | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Plan:
    missing: tuple[Descriptor, ...]
    bytes_total: int
    """Size of the missing blobs."""
    bytes_to_fetch: int
    """What still has to cross the network (partials already hold the rest)."""
    bytes_to_allocate: int
    """New disk space needed: missing blobs that have no preallocated partial yet."""


def plan(blobs: Sequence[Descriptor], sink: HasBlob, *, ingest_dir: Path) -> Plan:
    missing = tuple(d for d in blobs if not sink.has_blob(d.digest, d.size))
    total = sum(d.size for d in missing)
    already = 0
    allocate = 0
    for d in missing:
        part_dir = ingest_dir / d.digest.hex
        have = state.saved_bytes(part_dir, d.digest, d.size)
        already += have
        if not (part_dir / state.DATA_FILE).exists():
            allocate += d.size
    return Plan(missing=missing, bytes_total=total, bytes_to_fetch=total - already, bytes_to_allocate=allocate)


def kept(work: Plan, sink: HasBlob, *, ingest_dir: Path) -> int:
    """Bytes of ``work``'s blobs held now: committed blobs whole, partials as far as their saved state says (what
    an interrupted pull keeps and the next one does not fetch again)."""
    held = 0
    for d in work.missing:
        if sink.has_blob(d.digest, d.size):
            held += d.size
        else:
            held += state.saved_bytes(ingest_dir / d.digest.hex, d.digest, d.size)
    return held


def room_needed(blobs: Sequence[Descriptor], sink: HasBlob, *, ingest_dir: Path) -> int:
    """Free space a pull of ``blobs`` still needs: what :func:`check_space` asks for (0 when nothing is left to
    allocate; small files are the caller's floor)."""
    allocate = plan(blobs, sink, ingest_dir=ingest_dir).bytes_to_allocate
    return allocate + MARGIN if allocate else 0


def check_space(work: Plan, path: Path, *, free: Callable[[Path], int] | None = None) -> None:
    """Raise NoSpace (exit 8) when the blobs cannot fit, naming how much is needed and how much is free."""
    if not work.bytes_to_allocate:
        return
    available = free(path) if free else atomic.free_bytes(path)
    need = work.bytes_to_allocate + MARGIN
    if need > available:
        raise NoSpace(
            f"not enough disk space in {path}: the pull needs {_gib(need)} and {_gib(available)} is free",
            hint="free some space (modelctl prune, modelctl rm) or set MODELCTL_HOME to a larger disk",
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
