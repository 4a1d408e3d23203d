"""The seam every source of models implements: resolve a reference, read ranges of its files, say what it offers.

A source is a remote place a reference names a model in (an OCI registry, the Hugging Face Hub). Like
go-containerregistry's ``v1.Image``, it is a small interface: resolving reads only metadata (a manifest and
config, or the Hub's listing) and yields a :class:`Resolved`; the bytes of a file are read by ranges, by the
download engine or by the fit check's header reads. Failures are modelctl's typed errors (``NotFound``,
``AuthError``, ``RegistryError`` with ``temporary``), whatever the source speaks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelctl import artifact
from modelctl.digest import Digest
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.reference import Reference
from modelctl.store import Layout

if TYPE_CHECKING:
    from modelctl.oci.transport import BlobReader


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolved:
    """What a reference names on its source: the blobs a pull fetches and the model they make. No weights read."""

    reference: Reference
    """The model's name on the source (the Hub's carries the quantisation it chose)."""
    tags: tuple[str, ...]
    """The names a pull stores it under, the first one reported."""
    layers: tuple[Descriptor, ...]
    """Every file of the model, in manifest order."""
    model: artifact.Model
    """What the layers are: the GGUF shards the fit check reads, the packaged context, the size."""
    manifest: Manifest | None = None
    """The source's manifest; None for a source of plain files (the Hub), for which the pull writes one."""
    config: bytes = b""
    """The manifest's config blob (empty without a manifest)."""
    created: str = "1970-01-01T00:00:00Z"
    """The creation time a written manifest records: the source's last change, so a pull is reproducible."""
    local: bool = False
    """Everything is in the store already and nothing needs the network (a pinned digest, or an offline Hub)."""
    warning: str | None = None
    """Something the user should hear (the source was unreachable and the local copy is used)."""
    details: Mapping[str, Any] | None = None
    """What ``inspect --remote`` prints for a source without a manifest (the files and sha256 the Hub lists)."""


class Source(Protocol):
    """One reference on its source. Implementations: ``RegistrySource``, ``HubSource``; chosen by
    :func:`modelctl.sources.Sources.for_reference`. ``open_range`` may be called from several threads at once."""

    @property
    def reference(self) -> Reference:
        """The reference as the user gave it."""
        ...

    def resolve(self, store: Layout | None = None) -> Resolved:
        """The model the reference names. With ``store``, a complete local copy may stand in for the network."""
        ...

    def open_range(self, digest: Digest, start: int, end: int | None) -> AbstractContextManager[BlobReader]:
        """Bytes ``start`` to ``end`` (inclusive; None: to the end) of the resolved file ``digest``."""
        ...

    def tags(self) -> list[str]:
        """What the repository offers: the registry's tags, the Hub's quantisations (best first)."""
        ...

    def card(self) -> tuple[bytes, str] | None:
        """The model card attached to the reference and the digest it was found under; None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class BlobRanges:
    """One file of a source as the download engine's ``RangeSource``."""

    source: Source
    digest: Digest

    def open_range(self, start: int, end: int | None) -> AbstractContextManager[BlobReader]:
        return self.source.open_range(self.digest, start, end)


def read(source: Source, digest: Digest, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (inclusive) of ``digest``, whether or not the server honoured ``Range``."""
    with source.open_range(digest, start, end) as reader:
        return take_window(reader.iter_chunks(), start - reader.offset, end - start + 1)


def take_window(chunks: Iterable[bytes], skip: int, want: int) -> bytes:
    """The ``want`` bytes after the first ``skip`` of ``chunks``; stops reading as soon as it has them.

    ``skip`` is non-zero when the server ignored ``Range`` and sent the body from byte 0 (a 200, not a 206).
    """
    pieces: list[bytes] = []
    have = 0
    for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        pieces.append(chunk)
        have += len(chunk)
        if have >= want:
            break
    return b"".join(pieces)[:want]


def complete(store: Layout, manifest: Manifest) -> bool:
    """Whether the store holds the manifest's config and every layer (at its size)."""
    if not store.has_blob(manifest.config.digest):
        return False
    return all(store.has_blob(layer.digest, layer.size) for layer in manifest.blobs[1:])
