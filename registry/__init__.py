"""modelctl's OCI registry: an OCI Distribution Spec v1.1 server on aiohttp (laptops, air-gapped sites, CI).

Public API (used by ``modelctl registry serve`` / ``modelctl registry gc`` and ``python -m registry``)::

    serve(*, host, port, root=None, store=None, htpasswd=None, proxy=None, allow_anonymous_pull=False,
          tag_ttl=30.0, allow_sparse=False) -> None
    create_app(*, root=None, store=None, htpasswd=None, proxy=None, allow_anonymous_pull=False, tag_ttl=30.0,
               allow_sparse=False) -> Application
    gc(root, *, grace_seconds=0.0, dry_run=False) -> list[str]        (digests of the removed blobs)

``root`` is the registry's storage directory (``registry-data`` when neither is given); ``store`` serves a modelctl
store (an OCI image layout) read-only instead.

Imports are deferred so that importing ``registry`` costs nothing until a server is wanted. (The collector lives
in ``registry.collect``: a submodule named ``gc`` would replace the ``gc`` function on first import.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.app import create_app, serve
    from registry.collect import gc

__all__ = ["create_app", "gc", "serve"]

_WHERE = {"create_app": "registry.app", "serve": "registry.app", "gc": "registry.collect"}


def __getattr__(name: str) -> Any:
    """The public functions, imported on first use (PEP 562), so their signatures live in one place."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
