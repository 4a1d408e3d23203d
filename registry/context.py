"""The state every handler shares: what reads see, the storage writes go to, the authenticator, the cache."""

from __future__ import annotations

from dataclasses import dataclass

from registry.auth import Authenticator
from registry.content import Content
from registry.errors import RegistryHTTPError
from registry.proxy import PullThrough
from registry.storage import Storage
from registry.uploads import Uploads


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    content: Content
    """Where manifests, blobs, tags and the catalog are read: ``storage``, or a modelctl store (read-only)."""
    storage: Storage | None = None
    """Where pushes and deletes go; None when the registry serves a modelctl store."""
    uploads: Uploads | None = None
    auth: Authenticator | None = None
    proxy: PullThrough | None = None
    allow_sparse: bool = False
    """Accept manifests that reference blobs or child manifests not pushed here (the spec lets a registry
    refuse them, which is the default: a push that forgot a layer fails at once, not at the next pull)."""

    @property
    def read_only(self) -> str | None:
        """Why this registry takes no pushes or deletes; None when it does."""
        if self.proxy is not None:
            return "this registry is a read-only pull-through cache"
        if self.storage is None or self.uploads is None:
            return "this registry serves a modelctl store, read-only"
        return None

    def writable(self) -> tuple[Storage, Uploads]:
        """The storage and upload sessions a write goes to; 405 UNSUPPORTED when the registry is read-only."""
        if self.storage is None or self.uploads is None or self.proxy is not None:
            raise RegistryHTTPError("UNSUPPORTED", self.read_only)
        return self.storage, self.uploads
