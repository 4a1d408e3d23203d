"""The state every handler shares: storage, upload sessions, the authenticator, the pull-through cache."""

from __future__ import annotations

from dataclasses import dataclass

from registry.auth import Authenticator
from registry.proxy import PullThrough
from registry.storage import Storage
from registry.uploads import Uploads


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    storage: Storage
    uploads: Uploads
    auth: Authenticator | None = None
    proxy: PullThrough | None = None
    allow_sparse: bool = False
    """Accept manifests that reference blobs or child manifests not pushed here (the spec lets a registry
    refuse them, which is the default: a push that forgot a layer fails at once, not at the next pull)."""
