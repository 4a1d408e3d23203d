"""A reverse proxy in front of a real registry that misbehaves on demand and counts what it serves.

Forwards every request (keeping the ``Host`` header, so the registry's upload ``Location`` URLs point back at
the proxy) and can instead answer an injected status (404 / 401 / 500 with ``Retry-After`` ...), drop the
connection without an answer, redirect, or damage a body on its way: cut it (FIN or RST), stall it, trickle it,
flip a byte, claim more bytes than there are, send bytes past its end, or act as if the registry's copy of a blob
were truncated (fewer bytes than announced, 416 on resume). ``throttle`` caps every response to a byte rate. It
can listen with TLS or on another address. It counts the body bytes it actually wrote to clients per URL path:
the "bytes fetched" of a pull, and records each request's ``Range`` and whether it carried ``Authorization``.

    with FaultProxy(registry) as proxy:
        proxy.inject(Fault(status=500, retry_after="1", times=2))
        proxy.inject(Fault(path_contains="/blobs/", min_span=1 << 20, cut_after=3 << 20, reset=True, times=1))
        proxy.throttle = 8 << 20            # bytes per second, per response
        ... pull f"{proxy.host}/ai/x:1" ...
        assert proxy.blob_bytes(digest) < 1.5 * size
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import json
import re
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from helpers.servers import RegistryServer, serving

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
RESET_SETTLE = 0.3
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
    reset: bool = False
    """Close a cut connection with a TCP reset (RST) rather than an orderly FIN."""
    stall_after: int | None = None
    """Forward, but after this many body bytes send nothing for ``stall_for`` seconds, then close."""
    stall_for: float = 0.0
    piece: int | None = None
    gap: float = 0.0
    """A trickle: the body in writes of ``piece`` bytes, ``gap`` seconds apart."""
    truncate_to: int | None = None
    """Act as a registry whose copy of the blob holds only this many bytes but announces the full size: a body
    stops (FIN) at that blob offset, and a Range starting there or later is answered 416 ``bytes */N``."""
    corrupt_at: int | None = None
    """Flip the byte at this blob offset (same length, wrong content)."""
    trailing: bytes = b""
    """Bytes sent after the body, past its Content-Length."""
    grow_by: int = 0
    """Claim a blob this many bytes longer than it is: a 206's Content-Range total grows, a 200 gets that many
    extra bytes (and a Content-Length to match)."""
    redirect_to: str | None = None
    """Answer 307 to this base URL (``http://host:port``) plus the request's path and query."""
    path_contains: str = ""
    method: str | None = None
    min_span: int = 0
    """Only requests for at least this many bytes (a ``Range``'s span; no ``Range``: the whole body): the
    download engine's parts, not the fit check's 256 KiB header window."""
    times: int | None = None
    """How many matching requests it applies to; None: all of them."""

    def matches(self, method: str, path: str, range_header: str | None = None) -> bool:
        return (
            (self.times is None or self.times > 0)
            and self.path_contains in path
            and self.method in (None, method)
            and span(range_header) >= self.min_span
        )


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    status: int
    range: str | None
    authorization: bool = False
    """Whether the request carried an ``Authorization`` header."""
    at: float = field(default_factory=time.monotonic)
    """When it was answered (``time.monotonic``)."""


def span(range_header: str | None) -> float:
    """Bytes a ``Range: bytes=A-B`` asks for; infinite for ``bytes=A-`` and for no Range at all."""
    found = re.fullmatch(r"bytes=(\d+)-(\d*)", (range_header or "").strip())
    if not found or not found[2]:
        return float("inf")
    return int(found[2]) - int(found[1]) + 1


def range_start(range_header: str | None) -> int:
    found = re.match(r"bytes=(\d+)-", (range_header or "").strip())
    return int(found[1]) if found else 0


def _error_code(status: int, path: str) -> str:
    if status == 404:
        return "BLOB_UNKNOWN" if "/blobs/" in path else "MANIFEST_UNKNOWN"
    return _CODES.get(status, "UNKNOWN")


class FaultProxy:
    """The proxy; a context manager. ``host``/``url`` are where clients connect.

    ``bind`` is the address it listens on, ``name`` the host name clients use for it (default: ``bind``), and
    ``tls`` a server-side SSL context to speak HTTPS with (the upstream is always plain HTTP)."""

    def __init__(
        self,
        upstream: RegistryServer | str,
        *,
        bind: str = "127.0.0.1",
        name: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = upstream.host if isinstance(upstream, RegistryServer) else upstream
        self.bind = bind
        self.name = name or bind
        self.tls = tls
        self.faults: list[Fault] = []
        self.throttle: float | None = None
        """Bytes per second for each response body (each connection of a parallel download gets this rate)."""
        self.page_size: int | None = None
        """When set, the proxy paginates ``tags/list`` itself (docker-registry 2.8.2 ignores ``n``): pages
        of ``n`` (else ``page_size``) sorted tags after ``last``, with a ``Link: <...>; rel="next"``."""
        self.served: collections.Counter[str] = collections.Counter()
        self.log: list[Served] = []
        self.connections = 0
        """Connections accepted (a client that fails the TLS handshake is counted too)."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stack = contextlib.ExitStack()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start the proxy first"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"{self.name}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

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

    def _take_fault(self, method: str, path: str, range_header: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, range_header):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int, headers: Any) -> None:
        with self._lock:
            self.log.append(Served(method, path, status, headers.get("Range"), "Authorization" in headers))

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] += n

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._stopping.clear()
        self._server = self._stack.enter_context(serving(_handler(self), host=self.bind, tls=self.tls))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends any stall now
        self._stack.close()


def _handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy.connections += 1

        def handle(self) -> None:
            # a client that failed the TLS handshake or went away
            with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError, TimeoutError):
                super().handle()

        def do_GET(self) -> None:
            self._handle()

        do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

        def _handle(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            body = self._request_body()
            fault = proxy._take_fault(self.command, path, self.headers.get("Range"))
            if fault is not None and fault.drop:
                proxy._record(self.command, path, 0, self.headers)
                self.close_connection = True
                return
            if fault is not None and fault.status is not None:
                self._answer_error(fault, path)
                return
            if fault is not None and fault.redirect_to is not None:
                self._answer(307, path, {"Location": fault.redirect_to.rstrip("/") + self.path})
                return
            kept = fault.truncate_to if fault is not None else None
            if kept is not None and range_start(self.headers.get("Range")) >= kept:
                self._answer(416, path, {"Content-Range": f"bytes */{kept}"})
                return
            try:
                if proxy.page_size and path.endswith("/tags/list") and self.command == "GET":
                    self._tags_page(path, parse_qs(url.query))
                    return
                self._forward(self.path, path, body, fault)
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

        def _answer(self, status: int, path: str, headers: dict[str, str]) -> None:
            """An empty-bodied answer (a redirect, a 416)."""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            proxy._record(self.command, path, status, self.headers)

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
            proxy._record(self.command, path, fault.status, self.headers)

        def _tags_page(self, path: str, query: dict[str, list[str]]) -> None:
            conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                upstream = resp.read()
            finally:
                conn.close()
            proxy._record("GET", path, resp.status, self.headers)
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

        def _forward(self, target: str, path: str, body: bytes | None, fault: Fault | None) -> None:
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
                proxy._record(self.command, path, resp.status, self.headers)
                length = resp.getheader("Content-Length")
                has_body = self.command != "HEAD" and resp.status not in (204, 304)
                buffered = resp.read() if has_body and length is None else None
                offset, grow = _blob_offset(resp), fault.grow_by if fault else 0
                grown = grow if resp.status == 200 else 0  # a 206 keeps its span; only its total grows
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() == "content-range" and grow:
                        v = re.sub(r"/(\d+)$", lambda m: f"/{int(m[1]) + grow}", v)
                    if k.lower() == "content-length" and (buffered is not None or grown):
                        continue
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                if buffered is not None or grown:
                    size = len(buffered) if buffered is not None else int(length or 0)
                    self.send_header("Content-Length", str(size + grown))
                self.end_headers()
                if not has_body:
                    return
                self._stream(resp, buffered, path, fault or Fault(), offset)
                if grown or (fault and fault.trailing):
                    extra = b"\xa5" * grown + (fault.trailing if fault else b"")
                    self.wfile.write(extra)
                    proxy._count(path, len(extra))
            finally:
                conn.close()

        def _stream(
            self, resp: http.client.HTTPResponse, buffered: bytes | None, path: str, fault: Fault, offset: int
        ) -> None:
            """Copy the body, applying ``fault`` (``offset``: where the body starts in the blob)."""
            rate = proxy.throttle
            chunk = fault.piece or (min(CHUNK, max(4096, int(rate / 20))) if rate else CHUNK)
            cut = fault.cut_after
            if fault.truncate_to is not None:
                cut = min(cut if cut is not None else fault.truncate_to, fault.truncate_to - offset)
            sent = 0
            started = time.monotonic()
            pos = 0
            while True:
                if buffered is not None:
                    piece = buffered[pos : pos + chunk]
                    pos += len(piece)
                else:
                    piece = resp.read(chunk)
                if not piece:
                    return
                if fault.corrupt_at is not None and 0 <= fault.corrupt_at - offset - sent < len(piece):
                    flip = fault.corrupt_at - offset - sent
                    piece = piece[:flip] + bytes([piece[flip] ^ 0xFF]) + piece[flip + 1 :]
                if fault.stall_after is not None and sent + len(piece) > fault.stall_after:
                    self._write(path, piece[: fault.stall_after - sent])
                    self.wfile.flush()
                    proxy._stopping.wait(fault.stall_for)
                    self._close(reset=fault.reset)
                    return
                if cut is not None and sent + len(piece) > cut:
                    self._write(path, piece[: max(0, cut - sent)])
                    self.wfile.flush()
                    self._close(reset=fault.reset)
                    return
                self._write(path, piece)
                sent += len(piece)
                if fault.gap:
                    self.wfile.flush()
                    if proxy._stopping.wait(fault.gap):
                        return
                rate = proxy.throttle
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

        def _write(self, path: str, data: bytes) -> None:
            self.wfile.write(data)
            proxy._count(path, len(data))

        def _close(self, *, reset: bool) -> None:
            """End the connection mid-body: an orderly FIN, or (``reset``) an RST as a crashed peer would. Before an
            RST the proxy waits ``RESET_SETTLE`` so the bytes it sent arrive: an RST discards what is still queued
            on either side, and the test is of a reset *at byte N*."""
            self.close_connection = True
            if reset:
                proxy._stopping.wait(RESET_SETTLE)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def _blob_offset(resp: http.client.HTTPResponse) -> int:
    """Where a response's body starts in the blob: a 206's Content-Range start, else 0."""
    found = re.match(r"bytes (\d+)-", resp.getheader("Content-Range") or "") if resp.status == 206 else None
    return int(found[1]) if found else 0
