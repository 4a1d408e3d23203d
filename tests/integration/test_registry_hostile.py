"""Our registry (`python -m registry`) against a hostile client: no 5xx, nothing written outside its root, low RSS.

Named cases (long passwords, unknown users, deeply nested or huge manifests) first, then a hypothesis property that
throws random methods, paths, headers and bodies byte for byte over a raw socket (httpx would normalise the paths).
The examples are derandomized, so a run is the same every time. docs/reliability.md lists the cases.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import bcrypt
import httpx
import pytest
from helpers import servers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelctl.oci import safejson
from registry import manifests

RSS_LIMIT_KB = 512 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    base: Path
    """The directory holding ``root``'s parent: nothing may change here outside ``root``."""
    before: frozenset[str]

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def outside_root(self) -> frozenset[str]:
        return snapshot(self.base, self.root)


def snapshot(base: Path, root: Path) -> frozenset[str]:
    """Every path under ``base`` except ``root``'s contents and the server log."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = []
            continue
        out.update(str(here / n) for n in (*dirnames, *filenames) if not n.endswith(".log"))
    return frozenset(out)


def start(base: Path, *args: str) -> Server:
    root = base / "jail" / "root"
    proc, url, _log = servers.start_ours(root, *args, log=base / "server.log")
    return Server(proc, url, root, base, snapshot(base, root))


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory.mktemp("hostile"))
    yield server
    servers.stop(server.proc)


def write_htpasswd(path: Path, rounds: int) -> Path:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=rounds)).decode()
    path.write_text(f"alice:{hashed}\n")
    return path


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("hostile-auth")
    server = start(base, "--htpasswd", str(write_htpasswd(base / "htpasswd", rounds=4)))
    yield server
    servers.stop(server.proc)


def send(url: str, method: str, target: str, headers: dict[str, str], body: bytes) -> int:
    """One request, byte for byte, on its own connection; the response's status."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(head.encode("latin-1") + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n" in data:
                break
    return int(data.split(b" ", 2)[1])


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- named cases ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("password", ["x" * 73, "x" * 1000, "s3cret" + "x" * 100, "\u00e9" * 500])
def test_long_password_is_401_with_a_challenge(auth_server: Server, password: str) -> None:
    r = httpx.get(auth_server.url + "/v2/", headers=basic("alice", password))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="modelctl"'


def test_password_is_cut_to_72_bytes_as_htpasswd_does(tmp_path: Path) -> None:
    long = "t" * 72
    hashed = bcrypt.hashpw(long.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"bot:{hashed}\n")
    server = start(tmp_path, "--htpasswd", str(tmp_path / "htpasswd"))
    try:
        assert httpx.get(server.url + "/v2/", headers=basic("bot", long + "more")).status_code == 200
        assert httpx.get(server.url + "/v2/", headers=basic("bot", long[:-1])).status_code == 401
    finally:
        servers.stop(server.proc)


@pytest.mark.parametrize("header", ["Basic \u00e9\u00e9", "Basic !!!", "Basic " + "A" * 8000, "Bearer x", "Basic"])
def test_malformed_authorization_is_401(auth_server: Server, header: str) -> None:
    assert send(auth_server.url, "GET", "/v2/", {"Authorization": header}, b"") == 401


def test_unknown_user_costs_a_bcrypt_like_a_wrong_password(tmp_path: Path) -> None:
    """Cost 10 makes one check tens of milliseconds, far above the noise of a loopback request."""
    server = start(tmp_path, "--htpasswd", str(write_htpasswd(tmp_path / "htpasswd", rounds=10)))

    def fastest(user: str, password: str) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            assert httpx.get(server.url + "/v2/", headers=basic(user, password)).status_code == 401
            times.append(time.perf_counter() - t)
        return min(times)

    try:
        wrong, unknown, long = fastest("alice", "wrong"), fastest("mallory", "wrong"), fastest("alice", "x" * 100)
        assert unknown > wrong / 2 and long > wrong / 2, (wrong, unknown, long)
    finally:
        servers.stop(server.proc)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 50_000,
        b"[" * 100_000,
        b"[" * 65 + b"]" * 65,
        b'{"schemaVersion": 2, "x": ' + b"[" * 70 + b"]" * 70 + b"}",
    ],
    ids=["objects-50000", "unclosed-arrays-100000", "arrays-65", "deep-member-70"],
)
def test_deep_json_manifest_is_400(open_server: Server, body: bytes) -> None:
    r = httpx.put(open_server.url + "/v2/deep/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"


def test_huge_manifest_is_413(open_server: Server) -> None:
    body = b"[" * (manifests.MAX_MANIFEST_BYTES + 1)
    r = httpx.put(open_server.url + "/v2/huge/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    chunks = iter([body[:1_000_000], body[1_000_000:]])
    r = httpx.put(open_server.url + "/v2/huge/manifests/v1", content=chunks, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    assert open_server.rss_kb() < RSS_LIMIT_KB


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"{}", False),
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'{"s": "' + b"[" * 100 + b'"}', False),
        (b'{"s": "\\"' + b"[" * 100 + b"]" * 100 + b"}", True),
        (b'{"s": "\\\\", "t": "' + b"{" * 100 + b'"}', False),
        (b"[" * 100, True),
        (b"[]" * 100_000, False),
    ],
)
def test_too_deep(raw: bytes, deep: bool) -> None:
    assert safejson.too_deep(raw) is deep


# -- random requests -----------------------------------------------------------------------------------
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "%2e%2e",
            "%2E%2E",
            "..%2f..",
            "%2f",
            "%2F",
            "%00",
            "a%2fb",
            "//",
            "\\",
            "blobs",
            "uploads",
            "manifests",
            "tags",
            "list",
            "referrers",
            "_catalog",
            "v2",
            "latest",
            "sha256:" + "0" * 64,
            "sha256:" + "a" * 63,
            "sha512:" + "1" * 128,
            "a" * 300,
            "a" * 5000,
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"), min_size=1, max_size=20),
)
ENDPOINTS = st.builds(
    lambda name, tail, ref: f"/v2/{name}/{tail}{ref}",
    st.sampled_from(["fuzz", "fuzz/repo", "a" * 300, "..", "fuzz/../x", "fuzz%2f..%2f.."]),
    st.sampled_from(["manifests/", "blobs/", "blobs/uploads/", "tags/list", "referrers/"]),
    st.one_of(st.sampled_from(["", "latest", "sha256:" + "0" * 64, "..", "%2e%2e%2fx"]), SEGMENTS),
)
RANDOM_PATHS = st.builds(
    lambda prefix, segs, query: prefix + "/".join(segs) + query,
    st.sampled_from(["/v2/", "/v2/", "/v2/repo/", "/", "/v2/a/b/", "/v2/../"]),
    st.lists(SEGMENTS, max_size=8),
    st.sampled_from(
        [
            "",
            "",
            "?n=2",
            "?n=-1",
            "?n=99999999999999999999",
            "?last=%ff",
            "?digest=sha256:" + "0" * 64,
            "?mount=sha256:" + "0" * 64 + "&from=../x",
            "?_state=x",
            "?artifactType=%00",
        ]
    ),
)
PATHS = st.one_of(st.just("/v2/"), ENDPOINTS, RANDOM_PATHS)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Content-Range", "Range", "Accept", "Authorization", "Docker-Content-Digest"]),
    st.one_of(
        HEADER_VALUES,
        st.sampled_from(
            [
                OCI_MANIFEST,
                "application/vnd.oci.image.index.v1+json",
                "bytes=0-",
                "bytes=-1",
                "bytes=5-2",
                "0-99999999999999999999",
                "bytes=0-0,1-1,2-2",
                "Basic " + base64.b64encode(b"alice:" + b"b" * 100).decode(),
                "Basic \u00e9",
            ]
        ),
    ),
    max_size=4,
)
BODIES = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([1, 63, 64, 65, 1000, 50_000]).map(lambda n: b'{"a":' * n),
    st.integers(1, 2000).map(lambda n: b'{"schemaVersion": 2, "layers": ' + b"[" * n + b"]" * n + b"}"),
    st.just(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 2},
                "layers": [{"mediaType": "x", "digest": "sha256:../../x", "size": -1}],
            }
        ).encode()
    ),
)
METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]),
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-"), min_size=1, max_size=12),
)
FUZZ = settings(
    max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)


def check(server: Server, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
    status = send(server.url, method, path, headers, body)
    assert status < 500, (method, path, headers, body[:100])
    assert server.proc.poll() is None
    assert server.outside_root() == server.before
    assert server.rss_kb() < RSS_LIMIT_KB


@FUZZ
@given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
def test_random_requests_never_5xx_or_escape_the_root(
    open_server: Server, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    check(open_server, method, path, headers, body)


@settings(FUZZ, max_examples=200)
@given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
def test_random_requests_with_auth_on_never_5xx(
    auth_server: Server, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    check(auth_server, method, path, headers, body)


def test_a_hostile_upstream_token_service_is_an_unavailable_upstream_not_a_crash(tmp_path: Path) -> None:
    """The pull-through cache asks the upstream's token realm; a deeply nested answer must not crash it."""
    import http.server

    class Hostile(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            host = f"127.0.0.1:{self.server.server_address[1]}"
            if self.path.startswith("/token"):
                body = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
                self.send_response(200)
            else:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}'
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="hostile"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

    with servers.serving(Hostile) as upstream:
        proc, url, log = servers.start_ours(
            tmp_path / "cache", "--proxy", f"http://127.0.0.1:{upstream.server_address[1]}"
        )
        try:
            for _ in range(2):
                answer = httpx.get(f"{url}/v2/library/x/manifests/latest", timeout=30)
                assert answer.status_code != 500, answer.text
                assert answer.status_code in (401, 404, 502, 503), answer.status_code
            assert proc.poll() is None, log.read_text()
            assert "RecursionError" not in log.read_text()
        finally:
            proc.terminate()
            proc.wait(10)
