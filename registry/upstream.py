"""The pull-through cache's connection to its upstream registry: the modelctl client's HTTP stack, run in threads.

The cache talks to the upstream exactly as ``modelctl pull`` does, because it is the same code
(``modelctl.oci.transport`` and ``modelctl.oci.auth``): ``HTTPS_PROXY``/``NO_PROXY``, the CA file of
``SSL_CERT_FILE``/``SSL_CERT_DIR``, verified TLS, the token flow answered once per scope, and redirects that keep
``Authorization`` only within one origin (scheme, host and port). Credentials come from the upstream URL
(``https://user:password@host``). The client is synchronous, so every call runs in a daemon thread of its own
(:func:`in_thread`): a long blob download never holds an executor thread, and a server stopped mid-download exits
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, cast
from urllib.parse import unquote, urlsplit

import httpx

from modelctl.config import Config
from modelctl.errors import AuthError, ModelctlError
from modelctl.oci import transport
from modelctl.oci.auth import RegistryAuth
from modelctl.oci.credentials import Credentials

T = TypeVar("T")

STALL_TIMEOUT: Final = 60.0
"""Seconds without a byte from the upstream before its request fails."""


class UpstreamUnavailable(Exception):
    """The upstream could not be reached, or answered with a server error."""


class Upstream:
    """One upstream registry: its base URL and the shared client (a pool of connections, the token cache)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"proxy URL must be http(s)://host[:port], got {url!r}")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base = f"{parts.scheme}://{netloc}"
        self.registry = transport.registry_for_host(netloc)
        creds = (
            Credentials(unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
        )
        self._auth = RegistryAuth(lambda registry: creds if registry == self.registry else None)
        self._client: httpx.Client | None = None

    def start(self) -> None:
        """Build the client: reads the proxy and CA variables of the environment, as ``modelctl`` does."""
        settings = Config(home=Path(), stall_timeout=STALL_TIMEOUT)  # the transport reads timeouts only
        self._client = transport.build_client(settings, auth=self._auth)

    def close(self) -> None:
        """Close every connection, in-flight ones too: a thread blocked on a read fails at once."""
        if self._client is not None:
            self._client.close()

    def open(self, method: str, path: str, *, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """Send a request (blocking; run it with :func:`in_thread`); the caller closes the streamed response.
        401/403 (the token service's too) and 404 come back as a response; no connection or a 5xx raises
        UpstreamUnavailable."""
        assert self._client is not None, "Upstream.start() was not called"
        request = self._client.build_request(
            method,
            self.base + path,
            headers=headers,
            extensions={transport.SCOPES: [f"repository:{name}:pull"]},
        )
        try:
            response = transport.send(self._client, request)
        except AuthError:
            return httpx.Response(401, request=request)
        except ModelctlError as exc:
            raise UpstreamUnavailable(f"{self.base}{path}: {exc}") from None
        if response.status_code >= 500:
            response.close()
            raise UpstreamUnavailable(f"{self.base}{path}: HTTP {response.status_code}")
        return response

    def read(
        self, path: str, *, name: str, limit: int, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, bytes]:
        """A GET whose body is small (a manifest, a tags list): the response and its body, at most ``limit``
        bytes (more raises UpstreamUnavailable)."""
        response = self.open("GET", path, name=name, headers=headers)
        try:
            return response, transport.read_bounded(response, limit, what=f"upstream {path}")
        except (ModelctlError, httpx.HTTPError) as exc:
            raise UpstreamUnavailable(f"{self.base}{path}: {exc}") from None
        finally:
            response.close()

    def head(self, path: str, *, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = self.open("HEAD", path, name=name, headers=headers)
        response.close()
        return response


def content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def in_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``call`` in a new daemon thread; its result (or exception) comes back on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (call(), None)
        except BaseException as exc:  # delivered to the awaiting coroutine
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="registry-upstream", daemon=True).start()
    return future
