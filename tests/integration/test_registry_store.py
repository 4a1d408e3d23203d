"""``modelctl registry serve --store``: a machine's store served read-only, so another machine pulls from it.

Two stores, A and B (two MODELCTL_HOMEs). A pulls a model from a real docker-registry (behind a proxy that counts
every request); A serves its store with the real CLI; B pulls the same reference with A as its mirror, and the
upstream sees no request at all. B's bytes verify, an independent client (skopeo) reads A's server, and nothing
can be written to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import oci_layout, servers
from helpers.faults import FaultProxy
from helpers.ggufs import sha256_file, tiny_llama
from helpers.oci_layout import OCILayout
from helpers.pulls import one_line_error
from helpers.servers import RegistryServer

REPO = "ai/tiny"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def modelctl(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env=dict(os.environ, MODELCTL_HOME=str(home), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextlib.contextmanager
def serve_store(home: Path) -> Iterator[str]:
    """``modelctl registry serve --store --addr 127.0.0.1:0`` over ``home``'s store; yields its ``host:port``."""
    log = home.parent / f"{home.name}-serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelctl", "registry", "serve", "--store", "--addr", "127.0.0.1:0"],
            env=dict(os.environ, MODELCTL_HOME=str(home)),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"listening on http://(\S+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield found.group(1)
    finally:
        servers.stop(proc)


@pytest.fixture()
def upstream_model(tmp_path: Path, layout: OCILayout, docker_registry: RegistryServer) -> tuple[str, Path]:
    """``ai/tiny:1`` (one tiny GGUF) on the docker-registry; the manifest digest and the GGUF."""
    gguf = tiny_llama(tmp_path / "tiny.gguf")
    oci_layout.docker_v01_artifact(layout, "1", [gguf], annotate_filepaths=True)
    return oci_layout.push_layout(layout, "1", docker_registry, f"{REPO}:1").digest, gguf


@pytest.fixture()
def store_a(tmp_path: Path, upstream_model: tuple[str, Path], fault_proxy: FaultProxy) -> Path:
    """Store A, holding the model pulled from the upstream (through the counting proxy)."""
    home = tmp_path / "a"
    result = modelctl(home, "pull", "-q", f"{fault_proxy.host}/{REPO}:1")
    assert result.returncode == 0, result.stderr
    return home


def test_b_pulls_from_a_with_no_upstream_request(
    tmp_path: Path, store_a: Path, upstream_model: tuple[str, Path], fault_proxy: FaultProxy
) -> None:
    manifest_digest, gguf = upstream_model
    asked_before = len(fault_proxy.log)
    with serve_store(store_a) as a:
        home_b = tmp_path / "b"
        mirror = f"{fault_proxy.host}=http://{a}"
        result = modelctl(home_b, "pull", "-q", f"{fault_proxy.host}/{REPO}:1", MODELCTL_MIRRORS=mirror)
        assert result.returncode == 0, result.stderr
        assert fault_proxy.log[asked_before:] == [], "B's pull reached the upstream"
        print(f"\nB's pull through A: {len(fault_proxy.log) - asked_before} upstream requests")

        index = (home_b / "store" / "index.json").read_text()
        assert manifest_digest in index
        layer = home_b / "store" / "blobs" / "sha256" / sha256_file(gguf).split(":")[1]
        assert sha256_file(layer) == sha256_file(gguf)
        verified = modelctl(home_b, "verify", f"{fault_proxy.host}/{REPO}:1")
        assert verified.returncode == 0, verified.stderr

        # an independent client reads A's server: the same manifest bytes as the upstream's
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{a}/{REPO}:1"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        assert oci_layout.digest_of(raw) == manifest_digest


def test_store_server_is_read_only_and_lists_what_the_store_holds(
    store_a: Path, upstream_model: tuple[str, Path], fault_proxy: FaultProxy
) -> None:
    manifest_digest, gguf = upstream_model
    layer = sha256_file(gguf)
    index_before = (store_a / "store" / "index.json").read_bytes()
    with serve_store(store_a) as a:
        c = httpx.Client(base_url=f"http://{a}", timeout=30)
        assert c.get("/v2/_catalog").json() == {"repositories": [REPO]}
        assert c.get(f"/v2/{REPO}/tags/list").json() == {"name": REPO, "tags": ["1"]}
        r = c.head(f"/v2/{REPO}/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == manifest_digest
        assert c.get(f"/v2/{REPO}/manifests/{manifest_digest}").status_code == 200
        r = c.get(f"/v2/{REPO}/blobs/{layer}", headers={"Range": "bytes=0-3"})
        assert r.status_code == 206 and r.content == b"GGUF"
        assert c.get(f"/v2/{REPO}/manifests/2").status_code == 404
        assert c.get(f"/v2/ai/absent/blobs/{layer}").status_code == 404
        writes = [
            c.post(f"/v2/{REPO}/blobs/uploads/"),
            c.put(f"/v2/{REPO}/manifests/2", content=b"{}", headers={"Content-Type": OCI_MANIFEST}),
            c.delete(f"/v2/{REPO}/manifests/{manifest_digest}"),
            c.delete(f"/v2/{REPO}/blobs/{layer}"),
            c.get(f"/v2/{REPO}/blobs/uploads/{'0' * 32}"),
        ]
        for r in writes:
            assert r.status_code == 405, (r.request.method, r.request.url, r.text)
            assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert (store_a / "store" / "index.json").read_bytes() == index_before
    assert sha256_file(store_a / "store" / "blobs" / "sha256" / layer.split(":")[1]) == layer


def test_same_name_from_two_registries_needs_ns(tmp_path: Path, store_a: Path, fault_proxy: FaultProxy) -> None:
    """A model packaged here as ``other.example/ai/tiny:1`` (other bytes) beside the pulled one: without ``?ns=``
    the server refuses to guess; with it, each registry's model. A model added while serving shows at once."""
    with serve_store(store_a) as a:
        c = httpx.Client(base_url=f"http://{a}", timeout=30)
        first = c.get(f"/v2/{REPO}/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert first.status_code == 200
        other = tiny_llama(tmp_path / "other.gguf", seed=7)
        packaged = modelctl(store_a, "package", "--gguf", str(other), f"other.example/{REPO}:1")
        assert packaged.returncode == 0, packaged.stderr
        r = c.get(f"/v2/{REPO}/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 404 and "ns=" in r.json()["errors"][0]["message"]
        mine = c.get(f"/v2/{REPO}/manifests/1?ns={fault_proxy.host}", headers={"Accept": OCI_MANIFEST})
        theirs = c.get(f"/v2/{REPO}/manifests/1?ns=other.example", headers={"Accept": OCI_MANIFEST})
        assert mine.headers["Docker-Content-Digest"] == first.headers["Docker-Content-Digest"]
        assert theirs.status_code == 200
        assert theirs.headers["Docker-Content-Digest"] != mine.headers["Docker-Content-Digest"]
        assert c.get(f"/v2/{REPO}/tags/list?ns=nowhere.example").json()["tags"] == []


def test_serving_an_empty_home_is_a_usage_error(tmp_path: Path) -> None:
    result = modelctl(tmp_path / "empty", "registry", "serve", "--store", "--addr", "127.0.0.1:0")
    assert "is not a modelctl store" in one_line_error(result, 2)
    both = modelctl(tmp_path / "empty", "registry", "serve", "--store", "--root", str(tmp_path / "r"))
    one_line_error(both, 2)
