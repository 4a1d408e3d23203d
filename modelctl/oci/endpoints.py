"""Where a read for a registry goes: its configured mirrors that may answer it, in order, then the registry itself.

Each :class:`Endpoint` knows how its host must be spoken to: the URL of its API, the ``ns`` query Spegel needs, the
headers dfdaemon needs. Credentials are never an endpoint's business: the auth flow looks them up by the host a
request goes to, so a mirror gets the mirror's own (``modelctl login MIRROR``), never the registry's. A mirror with
its own CA file or ``insecure`` gets its own connection pool (:func:`tls_mounts`), reached directly rather than
through ``HTTPS_PROXY``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from modelctl.config import Config
from modelctl.errors import UsageError
from modelctl.mirrors import PULL, RESOLVE, Mirror
from modelctl.oci import transport

__all__ = ["PULL", "RESOLVE", "Endpoint", "for_registry", "tls_mounts", "upstream"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One host a request for ``registry`` may go to: a mirror, or (``mirror`` None) the registry itself."""

    api: str
    """The API root that ``/<repository>/<path>`` is appended to (``http://host:port/v2``)."""
    registry: str
    mirror: Mirror | None = None

    def url(self, repository: str, path: str) -> str:
        return f"{self.api}/{repository}/{path}"

    @property
    def host(self) -> str:
        """``host[:port]`` of this endpoint, as shown to the user (the registry's name for the registry)."""
        return transport.registry_for_host(httpx.URL(self.api).netloc.decode("ascii"))

    @property
    def params(self) -> dict[str, str]:
        return {"ns": self.registry} if self.mirror is not None and self.mirror.ns else {}

    @property
    def headers(self) -> dict[str, str]:
        """The configured headers (several values of one name joined, as HTTP allows)."""
        out: dict[str, str] = {}
        for name, value in self.mirror.headers if self.mirror is not None else ():
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def can(self, capability: str) -> bool:
        return self.mirror is None or self.mirror.can(capability)


def upstream(config: Config, registry: str) -> Endpoint:
    return Endpoint(f"{transport.endpoint_for(config, registry)}/v2", registry)


def for_registry(config: Config, registry: str, capability: str) -> list[Endpoint]:
    """The mirrors of ``registry`` that have ``capability`` (``pull`` or ``resolve``), then the registry."""
    mirrors = [Endpoint(m.api_root, registry, m) for m in config.mirrors_for(registry) if m.can(capability)]
    return list(dict.fromkeys([*mirrors, upstream(config, registry)]))


def tls_mounts(config: Config) -> dict[str, httpx.BaseTransport]:
    """A transport per mirror origin with its own TLS settings (a CA file, or no verification), keyed as
    ``httpx.Client(mounts=...)`` wants them."""
    mounts: dict[str, httpx.BaseTransport] = {}
    hosts = [*config.mirror_hosts.values()]
    for mirror in (m for group in hosts for m in group):
        if mirror.ca is None and not mirror.insecure:
            continue
        url = httpx.URL(mirror.url)
        key = f"{url.scheme}://{url.netloc.decode('ascii')}"
        if key not in mounts:
            mounts[key] = transport.http_transport(verify=_tls_context(mirror))
    return mounts


def _tls_context(mirror: Mirror) -> ssl.SSLContext | bool:
    if mirror.insecure:
        return False
    try:
        return ssl.create_default_context(cafile=str(mirror.ca))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"the CA file {mirror.ca} of mirror {mirror.url} cannot be used ({exc})",
            hint="give a PEM file of CA certificates in the mirror file's ca",
        ) from None
