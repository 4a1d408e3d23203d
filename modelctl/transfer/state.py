"""Part state of a partial download: which byte ranges of the preallocated file are already written.

Persisted as a small JSON file beside the data (temp file + ``os.replace``), so a ``kill -9`` loses at most the
bytes written since the last save and the next pull resumes every part where it stopped. The state names the boot
it was written in: only a crash of the whole machine (a new boot) can lose page-cache bytes the state counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from modelctl.digest import Digest
from modelctl.store import journal

STATE_FILE = "state.json"
DATA_FILE = "data"


@dataclass(slots=True)
class Part:
    start: int
    end: int
    """Exclusive."""
    done: int = 0
    """Bytes written from ``start``."""

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def position(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.done >= self.length


MAX_PART = 64 << 20
"""Large blobs are cut into more parts than there are streams, fetched in order: the written prefix (which the
sha256 follows) then keeps up with the download instead of waiting for a first part of size/N."""


def current_boot() -> str | None:
    """The id of this boot (see :mod:`modelctl.store.journal`): saved with the state, compared on resume."""
    return journal.boot_id()


def split(size: int, parts: int, min_part_size: int) -> list[Part]:
    """Equal parts, each at least ``min_part_size`` (one part for small blobs) and, for blobs larger than
    ``parts`` x MAX_PART, at most MAX_PART."""
    count = max(1, min(parts, size // max(min_part_size, 1)))
    if size > count * MAX_PART:
        count = -(-size // max(MAX_PART, min_part_size))
    step = -(-size // count) if size else 0
    out = [Part(i * step, min(size, (i + 1) * step)) for i in range(count)]
    return [p for p in out if p.length > 0] or [Part(0, 0)]


def can_split(part: Part, guard: int, min_part_size: int) -> bool:
    """Whether ``part``, being fetched, has room for a second stream: beyond the ``guard`` bytes its own stream may
    be writing now, at least two pieces of ``min_part_size``."""
    return part.end - part.position - guard >= 2 * max(1, min_part_size)


def split_busy(parts: list[Part], busy: set[int], guard: int, min_part_size: int) -> Part | None:
    """Cut the busy part with the most left in two and return its second half, inserted after it in ``parts``
    (the list still tiles the blob in order), or None when no busy part can be split (:func:`can_split`).

    Why: parts start at different times (streams are added while a pull runs), and without this the last ones to
    start finish alone, one stream each. ``busy`` holds the ``id`` of each part a stream is fetching; that stream
    stops at the part's new end, which lies beyond the ``guard`` bytes it may be writing at this moment."""
    candidates = [p for p in parts if id(p) in busy and can_split(p, guard, min_part_size)]
    if not candidates:
        return None
    victim = max(candidates, key=lambda p: p.end - p.position)
    cut = victim.position + guard + (victim.end - victim.position - guard) // 2
    second = Part(cut, victim.end)
    victim.end = cut
    parts.insert(parts.index(victim) + 1, second)
    return second


def load(directory: Path, digest: Digest, size: int) -> tuple[list[Part], str | None] | None:
    """The saved parts and the boot they were saved in, or None when there is no usable state (absent,
    corrupt, or for another blob/size)."""
    try:
        doc = json.loads((directory / STATE_FILE).read_text())
        if not isinstance(doc, dict) or doc.get("digest") != digest or doc.get("size") != size:
            return None
        parts = [Part(int(s), int(e), int(d)) for s, e, d in doc["parts"]]
        boot = doc.get("boot")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (directory / DATA_FILE).is_file() or (directory / DATA_FILE).stat().st_size != size:
        return None
    expected = 0
    for p in parts:  # the parts must tile [0, size) exactly, with sane progress
        if p.start != expected or p.end < p.start or not 0 <= p.done <= p.length:
            return None
        expected = p.end
    return (parts, boot if isinstance(boot, str) else None) if expected == size else None


def save(directory: Path, digest: Digest, size: int, parts: list[Part]) -> None:
    doc = {
        "digest": digest,
        "size": size,
        "boot": current_boot(),
        "parts": [[p.start, p.end, p.done] for p in parts],
    }
    tmp = directory / f".{STATE_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, directory / STATE_FILE)
    except BaseException:  # a full disk, or Ctrl-C: the previous state.json stays, no torn temp file beside it
        tmp.unlink(missing_ok=True)
        raise


def saved_bytes(directory: Path, digest: Digest, size: int) -> int:
    saved = load(directory, digest, size)
    return sum(p.done for p in saved[0]) if saved else 0
