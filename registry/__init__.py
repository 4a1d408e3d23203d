"""modelctl's OCI registry: an OCI Distribution Spec v1.1 server on aiohttp (laptops, air-gapped sites, CI).

Public API (used by ``modelctl registry serve`` / ``modelctl registry gc`` and ``python -m registry``)::

    serve(*, root, host, port, htpasswd=None, proxy=None, allow_anonymous_pull=False, tag_ttl=30.0) -> None
    create_app(*, root, htpasswd=None, proxy=None, allow_anonymous_pull=False, tag_ttl=30.0) -> Application
    gc(root, *, grace_seconds=0.0, dry_run=False) -> list[str]        (digests of the removed blobs)

Imports are deferred so that importing ``registry`` costs nothing until a server is wanted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["create_app", "gc", "serve"]


def create_app(
    *,
    root: Path,
    htpasswd: Path | None = None,
    proxy: str | None = None,
    allow_anonymous_pull: bool = False,
    tag_ttl: float = 30.0,
) -> web.Application:
    """The registry as an aiohttp application over the storage root ``root``."""
    from registry.app import create_app as _create_app

    return _create_app(
        root=root, htpasswd=htpasswd, proxy=proxy, allow_anonymous_pull=allow_anonymous_pull, tag_ttl=tag_ttl
    )


def serve(
    *,
    root: Path,
    host: str,
    port: int,
    htpasswd: Path | None = None,
    proxy: str | None = None,
    allow_anonymous_pull: bool = False,
    tag_ttl: float = 30.0,
) -> None:
    """Serve until SIGINT/SIGTERM; prints ``listening on http://HOST:PORT`` to stderr once bound.
    ``tag_ttl``: how long a pull-through cache trusts an upstream tag answer (seconds)."""
    from registry.app import serve as _serve

    _serve(
        root=root,
        host=host,
        port=port,
        htpasswd=htpasswd,
        proxy=proxy,
        allow_anonymous_pull=allow_anonymous_pull,
        tag_ttl=tag_ttl,
    )


def gc(root: Path, *, grace_seconds: float = 0.0, dry_run: bool = False) -> list[str]:
    """Remove blobs that no stored manifest references; returns their digests."""
    from registry.gc import gc as _gc

    return _gc(root, grace_seconds=grace_seconds, dry_run=dry_run)
