"""Loopback stand-ins for the mirrors a fleet runs, in front of a real registry, recording what clients send them.

``kind`` picks the behaviour, as their documentation and source describe it:

- ``spegel``: answers a manifest by tag only when the query names the registry (``?ns=<registry>``): HTTP 400
  without it, 404 for a registry it does not mirror.
- ``dragonfly``: dfdaemon's proxy picks the upstream from the ``X-Dragonfly-Registry`` header: HTTP 400 without
  it, 502 for one it cannot reach.
- ``plain``: a pull-through cache with no such rules.

With ``credentials`` the mirror demands its own Basic credentials; ``upstream_credentials`` are what it sends to
the registry (a cache's own account), else the client's ``Authorization`` goes through (dfdaemon's way) for
``dragonfly`` and nothing for the others. ``cut_blob_after`` cuts the first full GET of a blob after that many
bytes and answers 503 for that blob from then on (a peer that went away mid-blob). Every request is logged with its
query and headers as they arrived; body bytes served are counted per path.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import http.server
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from helpers.servers import serving

CHUNK = 256 << 10
HEADER_WINDOW = "bytes=0-262143"
"""The fit check's read of a GGUF header: never cut."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class MirrorStandIn:
    """The stand-in; a context manager. ``upstream`` is the registry's ``http://host:port``; ``registry`` the name
    clients use for it (the ``ns`` value and the ``X-Dragonfly-Registry`` it accepts is ``upstream``)."""

    def __init__(
        self,
        upstream: str,
        *,
        kind: str = "plain",
        registry: str = "",
        credentials: tuple[str, str] | None = None,
        upstream_credentials: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        cut_blob_after: int | None = None,
    ) -> None:
        assert kind in ("plain", "spegel", "dragonfly"), kind
        self.upstream = upstream.rstrip("/")
        self.kind = kind
        self.registry = registry
        self.credentials = credentials
        self.upstream_credentials = upstream_credentials
        self.tls = tls
        self.cut_blob_after = cut_blob_after
        self.log: list[Seen] = []
        self.served: collections.Counter[str] = collections.Counter()
        self._broken: set[str] = set()
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None, "start the mirror first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def requests(self, path_contains: str = "", status: int | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if path_contains in s.path and status in (None, s.status)]

    def blob_bytes(self, digest: str = "") -> int:
        with self._lock:
            return sum(n for path, n in self.served.items() if f"/blobs/{digest}" in path)

    def authorizations(self) -> set[str | None]:
        """Every ``Authorization`` value clients sent (None: a request without one)."""
        with self._lock:
            return {s.headers.get("Authorization") for s in self.log}

    def __enter__(self) -> MirrorStandIn:
        self._server = self._stack.enter_context(serving(_handler(self), tls=self.tls))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- what the handler asks -----------------------------------------------------------------------------

    def _refusal(self, path: str, query: dict[str, str], headers: Any) -> tuple[int, str] | None:
        """The status and message this kind answers instead of forwarding, if any."""
        if self.credentials is not None and headers.get("Authorization") != basic(*self.credentials):
            return 401, "mirror credentials required"
        if path in self._broken:
            return 503, "the peer holding this blob went away"
        if self.kind == "spegel" and "/manifests/" in path and not path.rsplit("/", 1)[1].startswith("sha256:"):
            if "ns" not in query:
                return 400, "mirror resolve requires ns query parameter"
            if query["ns"] != self.registry:
                return 404, f"no mirror for registry {query['ns']}"
        if self.kind == "dragonfly":
            named = headers.get("X-Dragonfly-Registry")
            if not named:
                return 400, "missing X-Dragonfly-Registry header"
            if named.rstrip("/") != self.upstream:
                return 502, f"cannot reach {named}"
        return None

    def _cut_at(self, method: str, path: str, range_header: str | None) -> int | None:
        with self._lock:
            if (
                self.cut_blob_after is None
                or method != "GET"
                or "/blobs/" not in path
                or range_header == HEADER_WINDOW
                or path in self._broken
            ):
                return None
            self._broken.add(path)
            return self.cut_blob_after

    def _record(self, method: str, path: str, query: dict[str, str], headers: Any, status: int) -> None:
        with self._lock:
            self.log.append(Seen(method, path, query, dict(headers.items()), status))

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] += n


def _handler(mirror: MirrorStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError, TimeoutError):
                super().handle()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            refusal = mirror._refusal(url.path, query, self.headers)
            if refusal is not None:
                status, message = refusal
                mirror._record(self.command, url.path, query, self.headers, status)
                body = f'{{"errors":[{{"code":"UNKNOWN","message":"{message}"}}]}}'.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return
            self._forward(url.path, query)

        do_HEAD = do_GET

        def _forward(self, path: str, query: dict[str, str]) -> None:
            headers = {k: v for k in ("Accept", "Range") if (v := self.headers.get(k))}
            if mirror.upstream_credentials is not None:
                headers["Authorization"] = basic(*mirror.upstream_credentials)
            elif mirror.kind == "dragonfly" and self.headers.get("Authorization"):
                headers["Authorization"] = self.headers["Authorization"]
            conn = http.client.HTTPConnection(urlsplit(mirror.upstream).netloc, timeout=60)
            try:
                conn.request(self.command, path, headers=headers)
                resp = conn.getresponse()
                mirror._record(self.command, path, query, self.headers, resp.status)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "www-authenticate"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command == "HEAD":
                    return
                cut = mirror._cut_at(self.command, path, self.headers.get("Range"))
                sent = 0
                while piece := resp.read(CHUNK):
                    if cut is not None and sent + len(piece) >= cut:
                        self.wfile.write(piece[: cut - sent])
                        mirror._count(path, cut - sent)
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(piece)
                    mirror._count(path, len(piece))
                    sent += len(piece)
            finally:
                conn.close()

    return Handler
