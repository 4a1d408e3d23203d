"""A reverse proxy in front of a real registry that misbehaves on demand and counts what it serves.

Forwards every request (keeping the ``Host`` header, so the registry's upload ``Location`` URLs point back at
the proxy) and can instead answer an injected status (404 / 401 / 500 with ``Retry-After`` ...), drop the
connection without an answer, cut a body short, or throttle each response to a byte rate. It counts the body
bytes it actually wrote to clients per URL path: the "bytes fetched" of a pull.

    with FaultProxy(registry) as proxy:
        proxy.inject(Fault(status=500, retry_after="1", times=2))
        proxy.throttle = 8 << 20            # bytes per second, per response
        ... pull f"{proxy.host}/ai/x:1" ...
        assert proxy.blob_bytes(digest) < 1.5 * size
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from helpers.servers import RegistryServer

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
CHUNK = 256 << 10
_CODES = {
    401: "UNAUTHORIZED",
    403: "DENIED",
    429: "TOOMANYREQUESTS",
    500: "UNKNOWN",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


@dataclass
class Fault:
    """What to do instead of forwarding, for requests whose path contains ``path_contains`` (and
    ``method``)."""

    status: int | None = None
    """Answer this HTTP status with an OCI error body."""
    retry_after: str | None = None
    drop: bool = False
    """Close the connection without answering."""
    cut_after: int | None = None
    """Forward, but close the connection after this many body bytes."""
    path_contains: str = ""
    method: str | None = None
    times: int | None = None
    """How many matching requests it applies to; None: all of them."""

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.times > 0)
            and self.path_contains in path
            and self.method in (None, method)
        )


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    status: int
    range: str | None


def _error_code(status: int, path: str) -> str:
    if status == 404:
        return "BLOB_UNKNOWN" if "/blobs/" in path else "MANIFEST_UNKNOWN"
    return _CODES.get(status, "UNKNOWN")


class FaultProxy:
    """The proxy; a context manager. ``host``/``url`` are where clients connect."""

    def __init__(self, upstream: RegistryServer | str) -> None:
        self.upstream = upstream.host if isinstance(upstream, RegistryServer) else upstream
        self.faults: list[Fault] = []
        self.throttle: float | None = None
        """Bytes per second for each response body (each connection of a parallel download gets this rate)."""
        self.page_size: int | None = None
        """When set, the proxy paginates ``tags/list`` itself (docker-registry 2.8.2 ignores ``n``): pages
        of ``n`` (else ``page_size``) sorted tags after ``last``, with a ``Link: <...>; rel="next"``."""
        self.served: collections.Counter[str] = collections.Counter()
        self.log: list[Served] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- control ---------------------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
        self.throttle = None

    def bytes_served(self, path_contains: str = "") -> int:
        """Body bytes written to clients for paths containing ``path_contains``."""
        with self._lock:
            return sum(n for path, n in self.served.items() if path_contains in path)

    def blob_bytes(self, digest: str = "") -> int:
        """Body bytes of blob GETs (of one blob when ``digest`` is given)."""
        return self.bytes_served(f"/blobs/{digest}")

    def requests(self, path_contains: str = "", method: str | None = None) -> list[Served]:
        with self._lock:
            return [s for s in self.log if path_contains in s.path and method in (None, s.method)]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int, range_header: str | None) -> None:
        with self._lock:
            self.log.append(Served(method, path, status, range_header))

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] += n

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

        def _handle(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            body = self._request_body()
            fault = proxy._take_fault(self.command, path)
            if fault is not None and fault.drop:
                proxy._record(self.command, path, 0, self.headers.get("Range"))
                self.close_connection = True
                return
            if fault is not None and fault.status is not None:
                self._answer_error(fault, path)
                return
            try:
                if proxy.page_size and path.endswith("/tags/list") and self.command == "GET":
                    self._tags_page(path, parse_qs(url.query))
                    return
                self._forward(self.path, path, body, fault.cut_after if fault else None)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _request_body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(data)
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _answer_error(self, fault: Fault, path: str) -> None:
            assert fault.status is not None
            data = (
                b""
                if self.command == "HEAD"
                else json.dumps(
                    {
                        "errors": [
                            {
                                "code": _error_code(fault.status, path),
                                "message": "injected by the fault proxy",
                            }
                        ]
                    }
                ).encode()
            )
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if fault.retry_after is not None:
                self.send_header("Retry-After", fault.retry_after)
            if fault.status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="fault-proxy"')
            self.end_headers()
            self.wfile.write(data)
            proxy._record(self.command, path, fault.status, self.headers.get("Range"))

        def _tags_page(self, path: str, query: dict[str, list[str]]) -> None:
            conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                upstream = resp.read()
            finally:
                conn.close()
            proxy._record("GET", path, resp.status, None)
            extra: dict[str, str] = {}
            if resp.status == 200:
                doc = json.loads(upstream)
                n = int(query.get("n", [str(proxy.page_size)])[0])
                last = query.get("last", [""])[0]
                tags = sorted(t for t in doc.get("tags") or [] if t > last)
                doc["tags"] = tags[:n]
                if len(tags) > n:
                    extra["Link"] = f'<{path}?{urlencode({"n": n, "last": tags[n - 1]})}>; rel="next"'
                upstream = json.dumps(doc).encode()
            elif challenge := resp.getheader("WWW-Authenticate"):
                extra["WWW-Authenticate"] = challenge
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(upstream)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(upstream)
            proxy._count(path, len(upstream))

        def _forward(self, target: str, path: str, body: bytes | None, cut_after: int | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
            try:
                try:
                    conn.request(self.command, target, body=body, headers=headers)
                    resp = conn.getresponse()
                except OSError:  # the registry is down: answer as a gateway would
                    self._answer_error(Fault(status=502), path)
                    return
                proxy._record(self.command, path, resp.status, self.headers.get("Range"))
                length = resp.getheader("Content-Length")
                has_body = self.command != "HEAD" and resp.status not in (204, 304)
                buffered = resp.read() if has_body and length is None else None
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and not (
                        buffered is not None and k.lower() == "content-length"
                    ):
                        self.send_header(k, v)
                if buffered is not None:
                    self.send_header("Content-Length", str(len(buffered)))
                self.end_headers()
                if not has_body:
                    return
                self._stream(resp, buffered, path, cut_after)
            finally:
                conn.close()

        def _stream(
            self, resp: http.client.HTTPResponse, buffered: bytes | None, path: str, cut_after: int | None
        ) -> None:
            rate = proxy.throttle
            chunk = min(CHUNK, max(4096, int(rate / 20))) if rate else CHUNK
            sent = 0
            started = time.monotonic()
            offset = 0
            while True:
                if buffered is not None:
                    piece = buffered[offset : offset + chunk]
                    offset += len(piece)
                else:
                    piece = resp.read(chunk)
                if not piece:
                    return
                if cut_after is not None and sent + len(piece) > cut_after:
                    piece = piece[: cut_after - sent]
                    self.wfile.write(piece)
                    proxy._count(path, len(piece))
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(piece)
                sent += len(piece)
                proxy._count(path, len(piece))
                rate = proxy.throttle
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

    return Handler
