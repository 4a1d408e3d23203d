"""Sources: the remote places a reference names a model in (OCI registries, the Hugging Face Hub), behind one
:class:`Source` protocol and chosen from the reference by :meth:`Sources.for_reference`, the only place that asks
which kind of reference it is.

Each source's module, and the HTTP stack, is imported when a reference needs it: a pull of a model the store holds
by digest makes no request and imports no HTTP client."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from modelctl.config import Config
from modelctl.reference import Reference
from modelctl.sources.source import BlobRanges, Resolved, Source, complete, read

if TYPE_CHECKING:
    import httpx

    from modelctl.oci.client import RegistryClient

__all__ = ["BlobRanges", "Resolved", "Source", "Sources", "complete", "read"]


class Sources:
    """Opens the source of each reference for one command; its sources share connections (and registry tokens),
    built on first use and closed with it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._registry: RegistryClient | None = None
        self._hub: httpx.Client | None = None

    def for_reference(self, ref: Reference) -> Source:
        if ref.is_hugging_face:
            from modelctl.sources.huggingface import HubSource

            return HubSource(self._config, ref, self._hub_client)
        from modelctl.sources.registry import RegistrySource

        return RegistrySource(self._registry_client, ref)

    def _registry_client(self) -> RegistryClient:
        from modelctl.oci.client import RegistryClient

        with self._lock:
            if self._registry is None:
                self._registry = RegistryClient(self._config)
            return self._registry

    def _hub_client(self) -> httpx.Client:
        from modelctl.oci import transport

        with self._lock:
            if self._hub is None:
                self._hub = transport.build_client(self._config)
            return self._hub

    def close(self) -> None:
        with self._lock:
            registry, hub, self._registry, self._hub = self._registry, self._hub, None, None
        if registry is not None:
            registry.close()
        if hub is not None:
            hub.close()

    def __enter__(self) -> Sources:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
