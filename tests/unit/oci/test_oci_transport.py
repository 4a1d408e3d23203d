"""The shared httpx client on real loopback sockets (TLS with SSL_CERT_FILE, proxies from the environment), and the
pure helpers: Retry-After and OCI error bodies."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import httpx
import pytest
from helpers.tls import self_signed

from modelctl import reference
from modelctl.config import Config
from modelctl.errors import RegistryError
from modelctl.oci import transport
from modelctl.oci.client import RegistryClient

ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 ``{}`` to GET and 502 to CONNECT; records request lines on the server."""

    def do_GET(self) -> None:
        self.server.seen.append(f"GET {self.path}")  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_CONNECT(self) -> None:
        self.server.seen.append(f"CONNECT {self.path}")  # type: ignore[attr-defined]
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    seen: list[str]


Serve = Callable[..., tuple[Server, int]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[Server] = []

    def start(context: ssl.SSLContext | None = None) -> tuple[Server, int]:
        server = Server(("127.0.0.1", 0), Recorder)
        server.seen = []
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def config(tmp_path: Path, **kw: object) -> Config:
    return Config(home=tmp_path, docker_config=tmp_path / "docker", **kw)  # type: ignore[arg-type]


def get(client: httpx.Client, url: str) -> httpx.Response:
    response = transport.send(client, client.build_request("GET", url))
    response.read()
    return response


def test_client_settings(tmp_path: Path) -> None:
    with transport.build_client(config(tmp_path, stall_timeout=7.0, connect_timeout=3.0)) as client:
        assert client.timeout.read == 7.0 and client.timeout.connect == 3.0
        assert client.headers["Accept-Encoding"] == "identity"
        assert client.trust_env


def test_tls_verified_with_ssl_cert_file(tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, port = serve(context)
    url = f"https://127.0.0.1:{port}/v2/"

    with transport.build_client(config(tmp_path)) as client, pytest.raises(RegistryError) as caught:
        get(client, url)
    assert not caught.value.temporary and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "SSL_CERT_FILE" in str(caught.value.hint), "the hint says how to trust it (never how to stop verifying)"

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with transport.build_client(config(tmp_path)) as client:
        assert get(client, url).status_code == 200
    assert server.seen == ["GET /v2/"]


def test_http_proxy_from_environment(tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, port = serve()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    cfg = config(tmp_path, insecure_registries=frozenset({"reg.test:5000"}))
    with RegistryClient(cfg) as client:
        client.ping("reg.test:5000")
    assert proxy.seen == ["GET http://reg.test:5000/v2/"]


def test_https_proxy_gets_connect(tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, port = serve()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    with RegistryClient(config(tmp_path, retries=0)) as client, pytest.raises(RegistryError) as caught:
        client.ping("reg.test")
    assert proxy.seen == ["CONNECT reg.test:443"]
    assert caught.value.temporary


def test_no_proxy_bypasses_proxy(tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    target, port = serve()
    dead = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    dead_port = dead.server_address[1]
    dead.server_close()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with RegistryClient(config(tmp_path)) as client:
        client.ping(f"127.0.0.1:{port}")
    assert target.seen == ["GET /v2/"]


# -- pure helpers ------------------------------------------------------------------------------------------


def test_retry_after() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    later = format_datetime(now + dt.timedelta(seconds=30), usegmt=True)
    assert transport.retry_after({"Retry-After": "12"}) == 12.0
    assert transport.retry_after({"Retry-After": "1.5"}) == 1.5
    assert transport.retry_after({"Retry-After": later}, now=now.timestamp()) == 30.0
    assert transport.retry_after({"Retry-After": later}, now=now.timestamp() + 60) == 0.0
    assert transport.retry_after({"Retry-After": "-3"}) == 0.0
    assert transport.retry_after({"Retry-After": "soon"}) is None
    assert transport.retry_after({"Retry-After": "nan"}) is None
    assert transport.retry_after({}) is None


@pytest.mark.parametrize(
    ("body", "codes", "text"),
    [
        (
            b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}',
            ["BLOB_UNKNOWN"],
            "BLOB_UNKNOWN: blob unknown",
        ),
        (
            b'{"errors":[{"code":"A","message":"x"},{"code":"B"}]}',
            ["A", "B"],
            "A: x; B",
        ),
        (b'{"errors": "nope"}', [], ""),
        (b"<html>502</html>", [], ""),
        (b"", [], ""),
        (b'{"errors":[1, {"message":"only a message"}]}', [], "only a message"),
    ],
)
def test_parse_errors(body: bytes, codes: list[str], text: str) -> None:
    assert transport.parse_errors(body) == (codes, text)


def test_registry_for_host() -> None:
    assert transport.registry_for_host("registry-1.docker.io") == "docker.io"
    assert transport.registry_for_host("reg.test:5000") == "reg.test:5000"


def test_socket_reads_are_large(tmp_path: Path) -> None:
    with transport.build_client(config(tmp_path)):
        assert httpcore.HTTP11Connection.READ_NUM_BYTES >= transport.READ_SIZE


def test_large_body_over_real_socket_is_intact(tmp_path: Path, serve: Serve) -> None:
    """iter_chunks on a real connection (not MockTransport): every byte arrives once, in order, bounded."""
    data = bytes(range(256)) * (3 << 12)  # 3 MiB

    class Blob(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            first = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0])
            self.send_response(206 if first else 200)
            if first:
                self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - first))
            self.end_headers()
            self.wfile.write(data[first:])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Blob)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ref = reference.parse(f"127.0.0.1:{server.server_address[1]}/ai/x:latest")
        digest = "sha256:" + "0" * 64
        with RegistryClient(config(tmp_path)) as client:
            with client.open_blob(ref, digest, start=12345) as blob:
                chunks = list(blob.iter_chunks(300_000))
                assert (blob.status, blob.offset, blob.total) == (206, 12345, len(data))
            assert b"".join(chunks) == data[12345:] and max(map(len, chunks)) <= 300_000
    finally:
        server.shutdown()
        server.server_close()


class _Body(BaseHTTPRequestHandler):
    """Serves ``server.data`` as a blob body in the way ``server.mode`` says: ``plain`` (Content-Length, headers and
    the start of the body in one write, so h11 holds some of it), ``chunked``, ``short`` (closes half-way) or
    ``stall`` (headers, then silence)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        data: bytes = self.server.data  # type: ignore[attr-defined]
        mode: str = self.server.mode  # type: ignore[attr-defined]
        if mode == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 100_000):
                piece = data[i : i + 100_000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        if mode == "stall":
            self.wfile.write(head)
            self.wfile.flush()
            threading.Event().wait(3)
            return
        body = data[: len(data) // 2] if mode == "short" else data
        self.wfile.write(head + body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def body_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[str, Config]]]:
    servers: list[Server] = []

    def start(mode: str, data: bytes, *, tls: bool = False, **kw: object) -> tuple[str, Config]:
        server = Server(("127.0.0.1", 0), _Body)
        server.data, server.mode = data, mode  # type: ignore[attr-defined]
        scheme = "http"
        if tls:
            cert, key = self_signed(tmp_path)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            scheme = "https"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{scheme}://127.0.0.1:{server.server_address[1]}/blob", config(tmp_path, **kw)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _read_all(reader: transport.BlobReader, size: int = 1 << 20) -> bytes:
    buffer = bytearray(size)
    out = bytearray()
    while got := reader.read_into(memoryview(buffer)):
        out += buffer[:got]
    return bytes(out)


@pytest.mark.parametrize(
    ("mode", "tls", "from_socket"),
    [("plain", False, True), ("plain", True, True), ("chunked", False, False)],
    ids=["http-socket", "tls-socket", "chunked-through-httpx"],
)
def test_read_into_reads_every_byte_once(
    body_server: Callable[..., tuple[str, Config]], mode: str, tls: bool, from_socket: bool
) -> None:
    """The blob body fast path reads the socket itself, after the bytes h11 already held; chunked bodies (and
    anything else it cannot read safely) go through httpx. Either way: every byte, once, in order."""
    data = os.urandom(3 << 20) + b"end"
    url, cfg = body_server(mode, data, tls=tls)
    with transport.build_client(cfg) as client:
        response = transport.send(client, client.build_request("GET", url))
        reader = transport.BlobReader(response, start=0, end=None)
        try:
            assert _read_all(reader, 100_003) == data
            assert isinstance(reader._body, transport._SocketBody) is from_socket
        finally:
            reader.close()


@pytest.mark.parametrize(
    ("mode", "settings", "says"),
    [("short", {}, "unreachable"), ("stall", {"stall_timeout": 0.3}, "timed out")],
    ids=["closed-half-way", "stalled"],
)
def test_read_into_reports_a_short_body_and_a_stall(
    body_server: Callable[..., tuple[str, Config]], mode: str, settings: dict[str, object], says: str
) -> None:
    url, cfg = body_server(mode, os.urandom(1 << 20), **settings)
    with transport.build_client(cfg) as client:
        reader = transport.BlobReader(transport.send(client, client.build_request("GET", url)), start=0, end=None)
        with pytest.raises(RegistryError) as caught:
            _read_all(reader)
        reader.close()
    assert caught.value.temporary and says in str(caught.value)
