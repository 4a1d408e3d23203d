"""kill -9 of our registry mid-push, then a restart on the same root: nothing torn is served, pushes complete.

Real processes on free loopback ports, real clients: raw sockets for the half-sent requests (so the kill point is
the number of body bytes the server was given), httpx for resuming a session, modelctl's ``RegistryClient`` and
``modelctl push`` / ``modelctl pull`` for the clients' retries. Each blob case kills the server while three uploads
of a 12 MiB blob are in flight: a chunked session (PATCHes of 4 MiB), a monolithic POST + PUT, and a single
``POST ?digest=``. The client sends each up to 2 MiB (one write batch of the server) past ``offset``, never the
last byte, and the kill comes once each upload's file on the server holds at least ``offset`` bytes (capped to what
the batching guarantees). After the restart:
- every file in ``blobs/`` hashes to its name, and every blob a repository links is served with the right bytes;
- the unfinished blob is 404 (HEAD and GET) in each repository;
- the chunked session reports a size between what was acknowledged and what was sent, its staged bytes are that
  prefix of the blob, and it resumes to a verified blob; the other two complete through a fresh client push.
Manifests: a kill with a PUT's body half sent leaves the tag on its old manifest; a kill amid a stream of
concurrent PUTs loses no acknowledged one and serves every manifest and tag with bytes that match their digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from helpers import servers

from modelctl.config import from_env
from modelctl.digest import Digest
from modelctl.oci.client import RegistryClient
from modelctl.reference import parse

MIB = 1 << 20
SIZE = 12 * MIB
CHUNK = 4 * MIB
FLUSH = 2 * MIB
"""The server writes a request body in batches of at least 2 MiB (``registry.uploads``): at most that much of what
was sent can still be in its memory, not in the upload's file."""
OFFSETS = (0, 2 * MIB + 12345, 4 * MIB, 7 * MIB + 1, SIZE)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WAIT = 15.0


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    """Our registry over ``root``; ``kill9`` and ``restart`` keep the root."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str = ""

    def start(self) -> Registry:
        """Start on a free port; a restart takes the same port again, as a restarted service does."""
        same_port = ("--addr", f"127.0.0.1:{self.port}") if self.url else ()  # the last --addr wins
        proc, self.url, _ = servers.start_ours(self.root, *same_port)
        self.procs.append(proc)
        return self

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill9(self) -> None:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def stop_all(self) -> None:
        for proc in self.procs:
            servers.stop(proc)


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "root").start()
    yield server
    server.stop_all()


# -- half-sent requests ----------------------------------------------------------------------------------
def half_sent(port: int, method: str, target: str, headers: dict[str, str], body: bytes) -> socket.socket:
    """Send the request line, ``headers`` and ``body`` (a prefix of what Content-Length announces); keep the
    connection open so the server waits for the rest. The caller closes the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + body)
    return sock


def upload_file(root: Path, upload_id: str) -> Path:
    return root / "uploads" / upload_id / "data"


def upload_of(root: Path, repository: str) -> str:
    """The id of the upload session of ``repository``, once the server has made it (its uploads directory)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for d in (root / "uploads").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if (d / "repository").read_text() == repository:
                    return d.name
        time.sleep(0.002)
    raise AssertionError(f"the server made no upload session of {repository}")


def wait_written(path: Path, at_least: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size >= at_least:
            return
        time.sleep(0.002)
    size = path.stat().st_size if path.is_file() else None
    raise AssertionError(f"the server wrote {size} of the {at_least} bytes sent to {path}")


def session_id(location: str) -> str:
    return location.split("?")[0].rstrip("/").rsplit("/", 1)[1]


# -- what a restarted registry serves --------------------------------------------------------------------
def assert_store_consistent(root: Path) -> int:
    """Every file named like a blob hashes to its name; returns how many were checked."""
    checked = 0
    for path in (root / "blobs" / "sha256").iterdir():
        if re.fullmatch(r"[0-9a-f]{64}", path.name):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"torn blob {path}"
            checked += 1
    return checked


def assert_served_blobs_verify(registry: Registry) -> int:
    """GET every blob every repository links; each must come back with bytes matching its digest."""
    served = 0
    with registry.http() as http:
        for link in (registry.root / "repositories").rglob("_layers/sha256/*"):
            if not re.fullmatch(r"[0-9a-f]{64}", link.name):
                continue
            repo = str(link.parent.parent.parent.relative_to(registry.root / "repositories"))
            r = http.get(f"/v2/{repo}/blobs/sha256:{link.name}")
            if r.status_code == 404:  # a link whose blob never landed is not served at all
                continue
            assert r.status_code == 200, r.text
            assert sha256(r.content) == f"sha256:{link.name}", f"{repo} served wrong bytes for {link.name}"
            served += 1
    return served


def assert_blob_pulls(http: httpx.Client, repo: str, digest: str, data: bytes) -> None:
    r = http.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200 and r.content == data, f"{repo}: {r.status_code}, {len(r.content)} bytes"


# -- blobs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", OFFSETS, ids=[f"{o}B" for o in OFFSETS])
def test_kill_9_mid_blob_push_then_resume_or_retry(registry: Registry, offset: int) -> None:
    data = os.urandom(SIZE)
    digest = sha256(data)
    root = registry.root
    sockets: list[socket.socket] = []
    try:
        with registry.http() as http:
            # chunked: whole chunks before the offset acknowledged, then the chunk holding it half sent
            chunked = http.post("/v2/crash/chunked/blobs/uploads/")
            assert chunked.status_code == 202
            location = chunked.headers["Location"]
            acked = min(offset // CHUNK * CHUNK, SIZE)
            for start in range(0, acked, CHUNK):
                r = http.patch(
                    location,
                    content=data[start : start + CHUNK],
                    headers={"Content-Range": f"{start}-{start + CHUNK - 1}"},
                )
                assert r.status_code == 202, r.text
                location = r.headers["Location"]
            sent = {"chunked": acked}
            if offset > acked:
                end = min(acked + CHUNK, SIZE)
                sent["chunked"] = min(offset + FLUSH, end - 1)
                headers = {"Content-Range": f"{acked}-{end - 1}", "Content-Length": str(end - acked)}
                sockets.append(half_sent(registry.port, "PATCH", location, headers, data[acked : sent["chunked"]]))
            # monolithic: POST, then a PUT carrying the whole blob, half sent
            put = http.post("/v2/crash/put/blobs/uploads/")
            assert put.status_code == 202
            put_location = put.headers["Location"]
            sent["put"] = sent["post"] = min(offset + FLUSH, SIZE - 1)
            length = {"Content-Length": str(SIZE)}
            sockets.append(
                half_sent(registry.port, "PUT", f"{put_location}?digest={digest}", length, data[: sent["put"]])
            )
            # single request: POST ?digest= with the blob as its body, half sent
            sockets.append(
                half_sent(
                    registry.port,
                    "POST",
                    f"/v2/crash/post/blobs/uploads/?digest={digest}",
                    length,
                    data[: sent["post"]],
                )
            )
        ids = {"chunked": session_id(location), "put": session_id(put_location)}
        wait_written(upload_file(root, ids["chunked"]), max(acked, sent["chunked"] - FLUSH))
        wait_written(upload_file(root, ids["put"]), sent["put"] - FLUSH)
        ids["post"] = upload_of(root, "crash/post")
        wait_written(upload_file(root, ids["post"]), sent["post"] - FLUSH)
        registry.kill9()
    finally:
        for sock in sockets:
            sock.close()

    assert not (root / "blobs" / "sha256" / digest.split(":")[1]).exists(), "no upload was finished"
    assert_store_consistent(root)
    registry.start()
    with registry.http() as http:
        for repo in ("crash/chunked", "crash/put", "crash/post"):
            assert http.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
            assert http.get(f"/v2/{repo}/blobs/{digest}").status_code == 404

        # the chunked session survived: its size is what reached the disk, a prefix of the blob; resume it
        status = http.get(location)
        assert status.status_code == 204, status.text
        last = int(status.headers["Range"].split("-")[1])
        done = last + 1 if last else 0  # "0-0" is also an empty session's answer; no batch written is 1 byte
        assert acked <= done <= sent["chunked"], (acked, done, sent)
        assert upload_file(root, ids["chunked"]).read_bytes() == data[:done], "the staged bytes are not the blob's"
        if done < SIZE:
            r = http.patch(location, content=data[done:], headers={"Content-Range": f"{done}-{SIZE - 1}"})
            assert r.status_code == 202, r.text
            location = r.headers["Location"]
        r = http.put(location, params={"digest": digest})
        assert r.status_code == 201, r.text
        assert_blob_pulls(http, "crash/chunked", digest, data)

        # the other two: the client pushes again from scratch (monolithic, then chunked), with modelctl's client
        with RegistryClient(from_env()) as client:
            client.upload_blob(parse(f"{registry.host}/crash/put"), Digest(digest), SIZE, data)
            client.upload_blob(parse(f"{registry.host}/crash/post"), Digest(digest), SIZE, data, chunk_size=CHUNK)
        assert_blob_pulls(http, "crash/put", digest, data)
        assert_blob_pulls(http, "crash/post", digest, data)
    assert assert_served_blobs_verify(registry) == 3
    assert assert_store_consistent(root) == 1


def test_kill_9_mid_modelctl_push_then_push_again_and_pull(
    registry: Registry, tmp_path: Path, smollm2_gguf: Path
) -> None:
    """The whole client: ``modelctl push`` of a 98 MB model, the registry killed once 32 MiB of the GGUF reached
    its disk; the push fails (exit 7), a second push after the restart succeeds, and a pull verifies."""
    publisher, user = tmp_path / "publisher", tmp_path / "user"
    name = f"{registry.host}/ai/crash:1"
    assert (
        modelctl(
            "package", "--gguf", str(smollm2_gguf), "--created", "2025-01-01T00:00:00Z", name, home=publisher
        ).returncode
        == 0
    )
    pushing = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "push", name],
        env=dict(os.environ, MODELCTL_HOME=str(publisher), MODELCTL_RETRIES="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pushing.poll() is None:
            sizes = [p.stat().st_size for p in (registry.root / "uploads").glob("*/data") if p.is_file()]
            if max(sizes, default=0) >= 32 * MIB:
                break
            time.sleep(0.005)
        else:
            raise AssertionError(f"the push ended (or stalled) before the kill: {pushing.communicate()}")
        registry.kill9()
        _, err = pushing.communicate(timeout=120)
    finally:
        if pushing.poll() is None:
            pushing.kill()
            pushing.wait()
    assert pushing.returncode == 7, err
    assert_store_consistent(registry.root)

    registry.start()
    with registry.http() as http:
        gguf = sha256(smollm2_gguf.read_bytes())
        assert http.head(f"/v2/ai/crash/blobs/{gguf}").status_code == 404
        assert http.head("/v2/ai/crash/manifests/1").status_code == 404
    again = modelctl("push", name, home=publisher)
    assert again.returncode == 0, again.stderr
    pulled = modelctl("pull", name, home=user)
    assert pulled.returncode == 0, pulled.stderr
    path = modelctl("path", name, home=user).stdout.strip()
    assert sha256(Path(path).read_bytes()) == gguf
    assert assert_served_blobs_verify(registry) >= 2


def modelctl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MODELCTL_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=env, capture_output=True, text=True, timeout=120
    )


# -- manifests -------------------------------------------------------------------------------------------
def push_blob(http: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def image(http: httpx.Client, repo: str, note: str, pad: int = 0) -> bytes:
    """A manifest of a config and one layer (both pushed); ``note`` makes it unique, ``pad`` makes it large."""
    config = json.dumps({"note": note}).encode()
    layer = f"layer {note}".encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(http, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(http, repo, layer),
                "size": len(layer),
            }
        ],
        "annotations": {"note": note, "pad": "x" * pad},
    }
    return json.dumps(doc).encode()


def put_manifest(http: httpx.Client, repo: str, ref: str, raw: bytes) -> httpx.Response:
    return http.put(f"/v2/{repo}/manifests/{ref}", content=raw, headers={"Content-Type": OCI_MANIFEST})


def test_kill_9_with_a_manifest_put_half_sent_keeps_the_old_tag(registry: Registry) -> None:
    repo = "crash/manifest"
    with registry.http() as http:
        old, new = image(http, repo, "old"), image(http, repo, "new", pad=64 << 10)
        assert put_manifest(http, repo, "latest", old).status_code == 201
    sock = half_sent(
        registry.port,
        "PUT",
        f"/v2/{repo}/manifests/latest",
        {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(new))},
        new[: len(new) // 2],
    )
    try:
        time.sleep(0.2)  # let the server read what was sent; whatever it has read, it holds no complete body
        registry.kill9()
    finally:
        sock.close()
    registry.start()
    with registry.http() as http:
        r = http.get(f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == old and r.headers["Docker-Content-Digest"] == sha256(old)
        assert http.get(f"/v2/{repo}/manifests/{sha256(new)}", headers={"Accept": OCI_MANIFEST}).status_code == 404
        assert http.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest"]


def test_kill_9_amid_concurrent_manifest_puts_loses_no_acknowledged_one(registry: Registry) -> None:
    """Four writers PUT 256 KiB manifests (each under its own tag and under one shared tag); the kill comes right
    after the 24th acknowledgement, with other PUTs in flight."""
    repo, writers, kill_after = "crash/manifests", 4, 24
    with registry.http() as http:
        bodies = [image(http, repo, f"m{i}", pad=256 << 10) for i in range(writers * 12)]
    acknowledged: list[int] = []
    lock, enough = threading.Lock(), threading.Event()

    def write(first: int) -> None:
        with registry.http() as http:
            for i in range(first, len(bodies), writers):
                try:
                    if put_manifest(http, repo, f"m{i}", bodies[i]).status_code == 201:
                        put_manifest(http, repo, "shared", bodies[i])
                        with lock:
                            acknowledged.append(i)
                            if len(acknowledged) >= kill_after:
                                enough.set()
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(60), f"only {len(acknowledged)} PUTs were acknowledged"
        registry.kill9()
    finally:
        for t in threads:
            t.join(60)
    with lock:
        durable = list(acknowledged)
    assert len(durable) < len(bodies), "the kill came after every PUT: nothing was in flight"

    registry.start()
    known = {sha256(b): b for b in bodies}
    with registry.http() as http:
        for i in durable:  # every acknowledged PUT is there, by tag and by digest
            r = http.get(f"/v2/{repo}/manifests/m{i}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == bodies[i]
        tags = http.get(f"/v2/{repo}/tags/list").json()["tags"]
        for tag in tags:  # every tag served, acknowledged or not, is a whole manifest matching its digest
            r = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            assert sha256(r.content) == r.headers["Docker-Content-Digest"] and known.get(sha256(r.content)) == r.content
        for digest, raw in known.items():  # by digest: absent or whole
            r = http.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 404 or r.content == raw
    assert assert_store_consistent(registry.root) > 0
