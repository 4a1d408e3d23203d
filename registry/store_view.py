"""A modelctl store served as registry content, read-only: machines on a LAN pull from one another's stores.

The store is an OCI image layout whose ``index.json`` names every model by its full reference
(``127.0.0.1:5000/ai/smollm2:135M``, ``docker.io/ai/smollm2:135M``). Served, a reference's repository and tag are
what a client asks for, whichever registry it came from, so a client that lists this server as a mirror of that
registry finds it under the same name. When models of the same repository and tag came from several registries
with different contents, ``?ns=<registry>`` (containerd's and Spegel's mirror parameter) picks one; without it
the request is refused rather than answered with a guess.

The index is re-read when ``index.json`` changes (a ``stat`` per request), so a model pulled or removed while
the server runs shows at once. Blobs are served from ``blobs/`` as they are, by digest, in any repository of the
store: the store verified each when it arrived, and the client verifies again. Manifests are read verified.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl import reference
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, InvalidReference, ModelctlError
from modelctl.oci import descriptor
from modelctl.oci.descriptor import Descriptor
from modelctl.store import MAX_MANIFEST, Layout
from registry import names
from registry.errors import RegistryHTTPError

_Key = tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one version of ``index.json`` says, arranged for lookups."""

    tags: dict[str, dict[str, dict[str, Descriptor]]] = field(default_factory=dict)
    """repository -> tag -> registry -> manifest."""
    repositories: tuple[str, ...] = ()
    known: frozenset[str] = frozenset()
    media_types: dict[Digest, str] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, Descriptor]]) -> _Snapshot:
        tags: dict[str, dict[str, dict[str, Descriptor]]] = {}
        repositories: set[str] = set()
        media_types: dict[Digest, str] = {}
        for name, desc in entries:
            try:
                ref = reference.parse(name)
            except InvalidReference:
                continue
            if not names.is_name(ref.repository):
                continue  # a name the distribution grammar cannot carry (upper case: Hugging Face)
            repositories.add(ref.repository)
            media_types[desc.digest] = desc.media_type
            if ref.tag is not None and names.is_tag(ref.tag):
                tags.setdefault(ref.repository, {}).setdefault(ref.tag, {})[ref.registry] = desc
        return cls(tags, tuple(sorted(repositories)), frozenset(repositories), media_types)


class StoreView:
    """The :class:`registry.content.Content` of a modelctl store (``$MODELCTL_HOME/store``)."""

    def __init__(self, root: Path) -> None:
        if not (root / "index.json").is_file():
            raise FileNotFoundError(f"{root} is not a modelctl store (no index.json)")
        self.layout = Layout(root)
        self._key: _Key = None
        self._snapshot = _Snapshot()
        self._documents: dict[Digest, str | None] = {}

    def recover(self) -> None:
        """Settle the store's journal of unflushed blobs first, as every modelctl command does: after a crash,
        blobs it may have lost are re-hashed (and removed if damaged) before any is served."""
        self.layout.recover_unflushed()

    def _current(self) -> _Snapshot:
        try:
            st = os.stat(self.layout.index_path)
            key: _Key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key != self._key:
            try:
                self._snapshot = _Snapshot.of(self.layout.entries()) if key is not None else _Snapshot()
            except ModelctlError as exc:
                raise RegistryHTTPError("UNAVAILABLE", f"the store's index cannot be read: {exc}") from None
            self._key = key
        return self._snapshot

    # -- Content -------------------------------------------------------------------------------------
    def blob_linked(self, name: str, digest: Digest) -> bool:
        return self._known(name) and self.layout.has_blob(digest)

    def _known(self, name: str) -> bool:
        return name in self._current().known

    def blob_path(self, digest: Digest) -> Path:
        return self.layout.blob_path(digest)

    def resolve_tag(self, name: str, tag: str, *, ns: str | None = None) -> Digest | None:
        by_registry = self._current().tags.get(name, {}).get(tag, {})
        if ns is not None:
            found = by_registry.get(ns)
            return found.digest if found is not None else None
        digests = {desc.digest for desc in by_registry.values()}
        if len(digests) > 1:
            raise RegistryHTTPError(
                "MANIFEST_UNKNOWN",
                f"{name}:{tag} is in this store from {len(by_registry)} registries with different contents "
                f"({', '.join(sorted(by_registry))}): ask with ?ns=<registry>",
                detail={"name": name, "reference": tag},
            )
        return digests.pop() if digests else None

    def revision_media_type(self, name: str, digest: Digest) -> str | None:
        if not self._known(name) or not self.layout.has_blob(digest):
            return None
        known = self._current().media_types.get(digest)
        if known is not None:
            return known
        if digest not in self._documents:  # a child of an index: what its bytes say it is
            raw = self.read_manifest(digest)
            try:
                self._documents[digest] = descriptor.parse(raw).media_type if raw is not None else None
            except IntegrityError:
                self._documents[digest] = None
        return self._documents[digest]

    def read_manifest(self, digest: Digest) -> bytes | None:
        try:
            return self.layout.read_blob(digest, max_size=MAX_MANIFEST)
        except ModelctlError:  # absent, too large for a manifest, or corrupt (then the store removed it)
            return None

    def tags(self, name: str, *, ns: str | None = None) -> list[str] | None:
        if not self._known(name):
            return None
        by_tag = self._current().tags.get(name, {})
        return sorted(tag for tag, by_registry in by_tag.items() if ns is None or ns in by_registry)

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        if not self._known(name):
            return []
        return [desc.to_json() for desc in self.layout.referrers(subject)]

    def repositories(self) -> tuple[str, ...]:
        return self._current().repositories
