"""The pull-through cache streams: a real docker-registry behind a throttling, fault-injecting proxy is the upstream,
our registry (``python -m registry --proxy``) the cache, and real clients (httpx streams, ``modelctl pull``) pull.

What the issue asks, measured through a slow upstream: the first byte reaches the first client long before the
upstream has sent the whole blob; 20 concurrent pulls cause one upstream GET of the blob; a blob the upstream
corrupts reaches no store and no client gets a complete body; the cache's upstream connection goes through
``HTTPS_PROXY`` unless ``NO_PROXY`` says otherwise and trusts the CA of ``SSL_CERT_FILE``, as the client does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import oci_layout, servers
from helpers.connect_proxy import ConnectProxy
from helpers.faults import Fault, FaultProxy
from helpers.ggufs import big_blob, sha256_file
from helpers.oci_layout import OCILayout
from helpers.pulls import one_line_error, pull_command
from helpers.servers import RegistryServer
from helpers.tls import self_signed

SIZE = 8 << 20
RATE = 2 << 20
"""Bytes per second the upstream sends each response: the whole blob takes about 4 s."""
REPO = "ai/streamed"
CLIENTS = 20


@dataclass(frozen=True)
class Cache:
    url: str
    root: Path

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def blob_url(self, digest: str) -> str:
        return f"{self.url}/v2/{REPO}/blobs/{digest}"

    def stored(self) -> set[str]:
        return {f"sha256:{p.name}" for p in (self.root / "blobs" / "sha256").iterdir()}


@contextlib.contextmanager
def cache_of(upstream: str, root: Path) -> Iterator[Cache]:
    """Our registry as a pull-through cache of ``upstream``, with the environment of the moment."""
    proc, url, _ = servers.start_ours(root, "--proxy", upstream)
    try:
        yield Cache(url, root)
    finally:
        servers.stop(proc)


@pytest.fixture()
def model(tmp_path: Path, layout: OCILayout, docker_registry: RegistryServer) -> str:
    """A model of one ``SIZE``-byte layer pushed to the docker-registry as ``ai/streamed:1``; the layer's digest."""
    path = tmp_path / "streamed.gguf"
    digest = big_blob(path, SIZE)
    oci_layout.docker_v01_artifact(layout, "1", [path], digests={path: digest})
    oci_layout.push_layout(layout, "1", docker_registry, f"{REPO}:1")
    return digest


@pytest.fixture()
def cache(tmp_path: Path, fault_proxy: FaultProxy) -> Iterator[Cache]:
    """The cache of the docker-registry, seen through the fault proxy at ``RATE`` bytes per second."""
    fault_proxy.throttle = RATE
    with cache_of(fault_proxy.url, tmp_path / "cache") as found:
        yield found


@dataclass
class Received:
    """What one streaming client got: bytes, their sha256, when the first and the last arrived, how it ended."""

    size: int = 0
    digest: str = ""
    first_byte: float | None = None
    done: float | None = None
    error: str | None = None


def receive(url: str, started: float) -> Received:
    out = Received()
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                if out.first_byte is None:
                    out.first_byte = time.monotonic() - started
                digest.update(chunk)
                out.size += len(chunk)
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.done = time.monotonic() - started
    out.digest = f"sha256:{digest.hexdigest()}"
    return out


def upstream_gets(proxy: FaultProxy, digest: str) -> int:
    return len(proxy.requests(f"/blobs/{digest}", method="GET"))


def test_first_byte_long_before_the_whole_blob(cache: Cache, model: str, fault_proxy: FaultProxy) -> None:
    """The first client's first byte comes while the upstream is still sending; the blob then verifies, is
    stored, and the next GET is answered from the store without asking the upstream."""
    got = receive(cache.blob_url(model), time.monotonic())
    assert got.error is None and got.size == SIZE and got.digest == model, got
    assert got.first_byte is not None and got.done is not None
    print(f"\nfirst byte {got.first_byte:.3f} s, whole {SIZE >> 20} MiB blob {got.done:.3f} s at {RATE >> 20} MiB/s")
    # Before streaming, the first byte came after the whole upstream transfer (the ratio was about 1).
    assert got.first_byte < 0.25 * got.done, f"first byte at {got.first_byte:.2f} s of {got.done:.2f} s"
    assert got.done > 0.5 * SIZE / RATE, "the upstream was not throttled: the test measures nothing"
    assert model in cache.stored()
    again = receive(cache.blob_url(model), time.monotonic())
    assert again.digest == model and again.size == SIZE
    assert upstream_gets(fault_proxy, model) == 1


def test_twenty_concurrent_pulls_make_one_upstream_get(
    tmp_path: Path, cache: Cache, model: str, fault_proxy: FaultProxy
) -> None:
    """20 ``modelctl pull`` processes at once, each into its own store, each fetching the layer in 1 MiB Range
    parts from the cache while the cache is still receiving it: the upstream sees one GET of the blob."""
    ref = f"{cache.host}/{REPO}:1"
    procs = []
    for i in range(CLIENTS):
        env = dict(os.environ, MODELCTL_HOME=str(tmp_path / f"home-{i}"), MODELCTL_PART_SIZE=str(1 << 20))
        procs.append(
            subprocess.Popen(pull_command(ref), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    for i in range(CLIENTS):
        layer = tmp_path / f"home-{i}" / "store" / "blobs" / "sha256" / model.split(":")[1]
        assert sha256_file(layer) == model
    gets = upstream_gets(fault_proxy, model)
    print(f"\n{CLIENTS} concurrent pulls: {gets} upstream GET(s) of the blob")
    assert gets == 1


def test_corrupt_upstream_blob_reaches_no_store_and_no_client(
    tmp_path: Path, cache: Cache, model: str, fault_proxy: FaultProxy
) -> None:
    """The upstream flips one byte in the middle of the blob. Five clients streaming it see their connections
    cut short (never all ``SIZE`` bytes), ``modelctl pull`` fails with nothing stored, the cache keeps no
    copy and no upload. Once the upstream is healthy the next GET fetches and stores the right bytes."""
    fault_proxy.inject(Fault(path_contains=f"/blobs/{model}", method="GET", corrupt_at=SIZE // 2, times=1))
    started = time.monotonic()
    results: list[Received] = []
    threads = [
        threading.Thread(target=lambda: results.append(receive(cache.blob_url(model), started))) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 5
    for got in results:
        assert got.error is not None and got.size < SIZE, got  # a short body and a broken connection
    assert upstream_gets(fault_proxy, model) == 1
    assert model not in cache.stored()
    assert os.listdir(cache.root / "uploads") == []
    fault_proxy.throttle = None
    healthy = receive(cache.blob_url(model), time.monotonic())
    assert healthy.error is None and healthy.digest == model
    assert model in cache.stored() and upstream_gets(fault_proxy, model) == 2


def test_corrupt_blob_fails_a_pull_through_the_cache(
    tmp_path: Path, cache: Cache, model: str, fault_proxy: FaultProxy
) -> None:
    """``modelctl pull`` through the cache while the upstream corrupts the layer: exit 7 in one line and no layer
    in the store; the cache keeps no copy either."""
    fault_proxy.inject(Fault(path_contains=f"/blobs/{model}", method="GET", corrupt_at=SIZE - 10))
    fault_proxy.throttle = None
    env = dict(os.environ, MODELCTL_RETRIES="0")
    result = subprocess.run(
        pull_command(f"{cache.host}/{REPO}:1"), env=env, capture_output=True, text=True, timeout=120
    )
    one_line_error(result, 7)  # the cache cut the connection: to the client, a network failure
    store_blob = Path(os.environ["MODELCTL_HOME"]) / "store" / "blobs" / "sha256" / model.split(":")[1]
    assert not store_blob.exists()
    assert model not in cache.stored()


# -- the upstream connection: HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE -------------------------------------------


@pytest.fixture()
def tls_upstream(tmp_path: Path, docker_registry: RegistryServer) -> Iterator[tuple[FaultProxy, Path]]:
    """The docker-registry behind HTTPS (a self-signed certificate for 127.0.0.1); yields it and its CA file."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FaultProxy(docker_registry, tls=context) as proxy:
        yield proxy, cert


def test_upstream_connection_honours_https_proxy_no_proxy_and_ca_file(
    tmp_path: Path, model: str, tls_upstream: tuple[FaultProxy, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream, ca = tls_upstream
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with ConnectProxy() as forward:
        monkeypatch.setenv("HTTPS_PROXY", forward.url)
        with cache_of(upstream.url, tmp_path / "via-proxy") as cache:
            got = receive(cache.blob_url(model), time.monotonic())
        assert got.error is None and got.digest == model
        assert forward.tunnels and set(forward.tunnels) == {upstream.host}, forward.tunnels

        tunnels = len(forward.tunnels)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with cache_of(upstream.url, tmp_path / "direct") as cache:
            got = receive(cache.blob_url(model), time.monotonic())
        assert got.error is None and got.digest == model
        assert len(forward.tunnels) == tunnels, "NO_PROXY named the upstream, yet the cache went through the proxy"

    monkeypatch.delenv("SSL_CERT_FILE")
    with cache_of(upstream.url, tmp_path / "untrusted") as cache:
        response = httpx.get(cache.blob_url(model), timeout=60)
    assert response.status_code == 503, response.text  # verification stays on: no CA, no bytes
    assert "certificate" in response.text
