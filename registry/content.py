"""``Content``: what the read endpoints need from wherever manifests and blobs live.

Two things provide it: the registry's own storage (:class:`registry.storage.Storage`) and a modelctl store served
read-only (:class:`registry.store_view.StoreView`). The endpoints that write use the storage itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from modelctl.digest import Digest


class Content(Protocol):
    def blob_linked(self, name: str, digest: Digest) -> bool:
        """The blob is stored and readable through repository ``name``."""
        ...

    def blob_path(self, digest: Digest) -> Path: ...

    def resolve_tag(self, name: str, tag: str, *, ns: str | None = None) -> Digest | None:
        """The manifest ``name:tag`` points at; ``ns`` is a mirror request's ``?ns=<registry>``."""
        ...

    def revision_media_type(self, name: str, digest: Digest) -> str | None:
        """The media type of manifest ``digest`` when ``name`` has it; None otherwise."""
        ...

    def read_manifest(self, digest: Digest) -> bytes | None: ...

    def tags(self, name: str, *, ns: str | None = None) -> list[str] | None:
        """Sorted tags; None when the repository does not exist."""
        ...

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]: ...

    def repositories(self) -> Sequence[str]:
        """Every repository name, sorted (the catalog pages through it by binary search)."""
        ...
