"""Our registry (`python -m registry`) as a real process, checked endpoint by endpoint with raw HTTP (httpx).

Covers the OCI distribution spec's pull, push, discovery and management endpoints and their errors, path
traversal, digest verification, concurrent and interrupted (kill -9) uploads, htpasswd auth, garbage
collection, and the pull-through cache in front of a real ``docker-registry`` with token auth.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import httpx
import pytest
from helpers import servers
from helpers.token_server import TokenServer

ROOT = Path(__file__).resolve().parents[2]
DOCKER_REGISTRY = Path("/usr/bin/docker-registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- our server as a process ---------------------------------------------------------------------------
@dataclass
class Registry:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_registry(root: Path, *args: str) -> Registry:
    """Start ``python -m registry`` on a free port (``--addr 127.0.0.1:0``); wait for its listening line."""
    proc, url, log = servers.start_ours(root, *args)
    return Registry(proc, url, root, log)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server = start_registry(tmp_path_factory.mktemp("ours") / "root")
    yield server
    server.stop()


# -- small protocol helpers ----------------------------------------------------------------------------
def with_digest(location: str, digest: str) -> httpx.URL:
    """The upload URL plus ``digest=``, keeping its own query (httpx's ``params=`` would replace it)."""
    return httpx.URL(location).copy_merge_params({"digest": digest})


def push_blob(c: httpx.Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    r = c.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = c.put(with_digest(r.headers["Location"], digest), content=data)
    assert r.status_code == 201, r.text
    return digest


def manifest_doc(
    config: str,
    layers: list[tuple[str, int]],
    *,
    subject: tuple[str, int] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": s} for d, s in layers],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject[0], "size": subject[1]}
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc).encode()


def push_image(c: httpx.Client, name: str, ref: str, payload: bytes = b"layer", **kw: Any) -> tuple[str, bytes]:
    config = push_blob(c, name, b"{}")
    layer = push_blob(c, name, payload)
    raw = manifest_doc(config, [(layer, len(payload))], **kw)
    r = c.put(f"/v2/{name}/manifests/{ref}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(raw)
    return sha256(raw), raw


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body["errors"][0]) >= {"code", "message", "detail"}
    return str(body["errors"][0]["code"])


def raw_request(url: str, method: str, target: str) -> tuple[int, bytes]:
    """Send a request line byte for byte (httpx would normalise ``..`` and percent-encoding away)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def blob_files(root: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}


# -- pull ----------------------------------------------------------------------------------------------
def test_ping(reg: Registry) -> None:
    r = reg.client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_blob_get_head_and_ranges(reg: Registry) -> None:
    c = reg.client
    data = os.urandom(100_000)
    digest = push_blob(c, "pull/blob", data)
    r = c.head(f"/v2/pull/blob/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Docker-Content-Digest"] == digest
    assert int(r.headers["Content-Length"]) == len(data)
    r = c.get(f"/v2/pull/blob/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    r = c.get(f"/v2/pull/blob/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = c.get(f"/v2/pull/blob/blobs/{digest}", headers={"Range": "bytes=99990-"})
    assert r.status_code == 206 and r.content == data[99990:]
    r = c.get(f"/v2/pull/blob/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    missing = sha256(b"missing")
    r = c.get(f"/v2/pull/blob/blobs/{missing}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    assert c.head(f"/v2/pull/blob/blobs/{missing}").status_code == 404


def test_manifest_by_tag_and_digest(reg: Registry) -> None:
    c = reg.client
    digest, raw = push_image(c, "pull/manifest", "v1")
    for ref in ("v1", digest):
        r = c.get(f"/v2/pull/manifest/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == raw
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        h = c.head(f"/v2/pull/manifest/manifests/{ref}")
        assert h.status_code == 200 and h.content == b""
        assert int(h.headers["Content-Length"]) == len(raw) and h.headers["Docker-Content-Digest"] == digest
    # Content negotiation: a client that only accepts Docker schema 2 is not handed an OCI manifest.
    r = c.get(
        "/v2/pull/manifest/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = c.get("/v2/pull/manifest/manifests/v1", headers={"Accept": "*/*"})
    assert r.status_code == 200
    r = c.get("/v2/pull/manifest/manifests/nope")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = c.get(f"/v2/pull/manifest/manifests/{sha256(b'nope')}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    # Per-repository: the same digest is not readable through another repository.
    assert c.get(f"/v2/pull/other/manifests/{digest}").status_code == 404


def test_docker_media_type_is_kept(reg: Registry) -> None:
    c = reg.client
    config = push_blob(c, "pull/docker", b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config,
            "size": 2,
        },
        "layers": [],
    }
    raw = json.dumps(doc, indent=3).encode()
    r = c.put("/v2/pull/docker/manifests/x", content=raw, headers={"Content-Type": doc["mediaType"]})
    assert r.status_code == 201, r.text
    r = c.get("/v2/pull/docker/manifests/x")
    assert r.headers["Content-Type"] == doc["mediaType"] and r.content == raw


# -- push ----------------------------------------------------------------------------------------------
def test_single_post_upload(reg: Registry) -> None:
    c = reg.client
    data = b"single post"
    r = c.post("/v2/push/single/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/push/single/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert c.get(r.headers["Location"]).content == data


def test_digest_mismatch_stores_nothing(reg: Registry) -> None:
    c = reg.client
    data, claimed = b"the real bytes " + os.urandom(8), sha256(b"other bytes")
    before, uploads_before = blob_files(reg.root), set((reg.root / "uploads").iterdir())
    r = c.post("/v2/push/bad/blobs/uploads/")
    r = c.put(r.headers["Location"], params={"digest": claimed}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = c.post("/v2/push/bad/blobs/uploads/", params={"digest": claimed}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert set((reg.root / "uploads").iterdir()) == uploads_before  # failed sessions are gone too
    for digest in (claimed, sha256(data)):
        assert c.head(f"/v2/push/bad/blobs/{digest}").status_code == 404
    assert blob_files(reg.root) == before
    r = c.post("/v2/push/bad/blobs/uploads/", params={"digest": "sha256:../../x"}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = c.post("/v2/push/bad/blobs/uploads/")
    r = c.put(r.headers["Location"], content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_chunked_upload_out_of_order_and_status(reg: Registry) -> None:
    c = reg.client
    data = os.urandom(30_000)
    r = c.post("/v2/push/chunked/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    r = c.patch(loc, content=data[:10_000], headers={"Content-Range": "0-9999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9999"
    loc = r.headers["Location"]
    r = c.patch(loc, content=data[20_000:], headers={"Content-Range": "20000-29999"})
    assert r.status_code == 416 and error_code(r) == "BLOB_UPLOAD_INVALID"
    assert r.headers["Range"] == "0-9999"
    r = c.patch(loc, content=data[:5], headers={"Content-Range": "0-4"})
    assert r.status_code == 416
    r = c.get(loc)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-9999" and r.headers["Location"] == loc
    # A chunk whose length contradicts its Content-Range is refused and leaves the upload as it was.
    r = c.patch(loc, content=data[10_000:10_010], headers={"Content-Range": "10000-10019"})
    assert r.status_code == 400 and error_code(r) == "SIZE_INVALID"
    assert c.get(loc).headers["Range"] == "0-9999"
    r = c.patch(loc, content=data[10_000:20_000], headers={"Content-Range": "10000-19999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-19999"
    # The last chunk rides on the closing PUT.
    r = c.put(loc, params={"digest": sha256(data)}, content=data[20_000:], headers={"Content-Range": "20000-29999"})
    assert r.status_code == 201, r.text
    assert c.get(f"/v2/push/chunked/blobs/{sha256(data)}").content == data
    assert c.get(loc).status_code == 404
    assert error_code(c.get(loc)) == "BLOB_UPLOAD_UNKNOWN"


def test_streamed_patch_without_range_and_cancel(reg: Registry) -> None:
    c = reg.client
    data = os.urandom(3 * 1024 * 1024 + 17)
    loc = c.post("/v2/push/stream/blobs/uploads/").headers["Location"]
    r = c.patch(loc, content=iter([data[:1_000_000], data[1_000_000:]]))  # chunked transfer encoding
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    assert c.put(r.headers["Location"], params={"digest": sha256(data)}).status_code == 201
    loc = c.post("/v2/push/stream/blobs/uploads/").headers["Location"]
    assert c.delete(loc).status_code == 204
    assert c.get(loc).status_code == 404
    bogus = "/v2/push/stream/blobs/uploads/" + "0" * 32
    assert error_code(c.patch(bogus, content=b"x")) == "BLOB_UPLOAD_UNKNOWN"
    # An upload session belongs to its repository.
    loc = c.post("/v2/push/stream/blobs/uploads/").headers["Location"]
    assert c.get(loc.replace("/push/stream/", "/push/other/")).status_code == 404


def test_cross_repository_mount(reg: Registry) -> None:
    c = reg.client
    data = os.urandom(1000)
    digest = push_blob(c, "mount/source", data)
    assert c.head(f"/v2/mount/target/blobs/{digest}").status_code == 404
    r = c.post("/v2/mount/target/blobs/uploads/", params={"mount": digest, "from": "mount/elsewhere"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    r = c.post("/v2/mount/target/blobs/uploads/", params={"mount": digest, "from": "mount/source"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    assert c.get(f"/v2/mount/target/blobs/{digest}").content == data
    r = c.post("/v2/mount/target/blobs/uploads/", params={"mount": digest, "from": "../../etc"})
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"


def test_manifest_validation(reg: Registry) -> None:
    c = reg.client
    name = "push/validate"
    config = push_blob(c, name, b"{}")
    missing = sha256(b"never pushed")
    other_repo_blob = push_blob(c, "push/elsewhere", b"in another repository")

    def put(body: bytes, ref: str = "t", ctype: str = OCI_MANIFEST) -> httpx.Response:
        return c.put(f"/v2/{name}/manifests/{ref}", content=body, headers={"Content-Type": ctype})

    r = put(manifest_doc(config, [(missing, 12)]))
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert missing in json.dumps(r.json())
    r = put(manifest_doc(config, [(other_repo_blob, 21)]))
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert error_code(put(b"{not json")) == "MANIFEST_INVALID"
    assert error_code(put(b"[]")) == "MANIFEST_INVALID"
    r = put(json.dumps({"schemaVersion": 1, "name": name}).encode())
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    r = put(manifest_doc(config, []), ctype=OCI_INDEX)
    assert error_code(r) == "MANIFEST_INVALID"  # mediaType field and Content-Type disagree
    r = put(manifest_doc(config, []), ref=sha256(b"different"))
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    huge = manifest_doc(config, [], annotations={"pad": "x" * (4 * 1024 * 1024)})
    r = put(huge)
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"
    r = c.put(f"/v2/{name}/manifests/t", content=iter([huge]), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 1}],
        }
    ).encode()
    r = put(index, ctype=OCI_INDEX)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert c.get(f"/v2/{name}/manifests/t").status_code == 404
    # By digest, and an index over it.
    raw = manifest_doc(config, [])
    r = put(raw, ref=sha256(raw))
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/{name}/manifests/{sha256(raw)}"
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(raw), "size": len(raw)}],
        }
    ).encode()
    assert put(index, ref="multi", ctype=OCI_INDEX).status_code == 201
    assert c.get(f"/v2/{name}/manifests/multi").headers["Content-Type"] == OCI_INDEX


# -- discovery -----------------------------------------------------------------------------------------
def test_tags_list_pagination(reg: Registry) -> None:
    c = reg.client
    name = "discover/tags"
    _digest, raw = push_image(c, name, "b")
    for tag in ("a", "C", "c", "d-1", "d_2"):
        assert (
            c.put(f"/v2/{name}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
        )
    everything = ["C", "a", "b", "c", "d-1", "d_2"]  # ASCIIbetical
    r = c.get(f"/v2/{name}/tags/list")
    assert r.json() == {"name": name, "tags": everything} and "Link" not in r.headers
    seen: list[str] = []
    url: str | None = f"/v2/{name}/tags/list?n=4"
    while url:
        r = c.get(url)
        assert r.status_code == 200
        seen += r.json()["tags"]
        m = re.match(r'<([^>]+)>;\s*rel="next"', r.headers.get("Link", ""))
        url = m.group(1) if m else None
    assert seen == everything
    assert c.get(f"/v2/{name}/tags/list", params={"n": 2, "last": "b"}).json()["tags"] == ["c", "d-1"]
    assert c.get(f"/v2/{name}/tags/list", params={"last": "c"}).json()["tags"] == ["d-1", "d_2"]
    r = c.get(f"/v2/{name}/tags/list", params={"n": 0})
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = c.get("/v2/discover/unknown/tags/list")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_catalog(reg: Registry) -> None:
    c = reg.client
    push_image(c, "zz/catalog/one", "x")
    push_image(c, "zz/catalog/two", "x")
    repos = c.get("/v2/_catalog").json()["repositories"]
    assert {"zz/catalog/one", "zz/catalog/two"} <= set(repos) and repos == sorted(repos)
    r = c.get("/v2/_catalog", params={"n": 1, "last": "zz/catalog/one"})
    assert r.json()["repositories"] == ["zz/catalog/two"]
    first = c.get("/v2/_catalog", params={"n": 1})
    assert len(first.json()["repositories"]) == 1 and 'rel="next"' in first.headers["Link"]


def test_referrers(reg: Registry) -> None:
    c = reg.client
    name = "discover/referrers"
    subject, raw = push_image(c, name, "model")
    size = len(raw)
    r = c.get(f"/v2/{name}/referrers/{subject}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    card_cfg = push_blob(c, name, b"{}")
    card_layer = push_blob(c, name, b"# card")
    card = manifest_doc(
        card_cfg,
        [(card_layer, 6)],
        subject=(subject, size),
        artifact_type="application/vnd.modelctl.card.v1",
        annotations={"org.opencontainers.image.title": "card"},
    )
    r = c.put(f"/v2/{name}/manifests/{sha256(card)}", content=card, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject
    sig = manifest_doc(card_cfg, [], subject=(subject, size))  # no artifactType: the config's media type
    r = c.put(f"/v2/{name}/manifests/{sha256(sig)}", content=sig, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    found = {d["digest"]: d for d in c.get(f"/v2/{name}/referrers/{subject}").json()["manifests"]}
    assert found[sha256(card)] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(card),
        "size": len(card),
        "artifactType": "application/vnd.modelctl.card.v1",
        "annotations": {"org.opencontainers.image.title": "card"},
    }
    assert found[sha256(sig)]["artifactType"] == EMPTY_CONFIG
    r = c.get(f"/v2/{name}/referrers/{subject}", params={"artifactType": "application/vnd.modelctl.card.v1"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(card)]
    # A referrer may arrive before its subject.
    ghost = sha256(b"subject pushed later")
    early = manifest_doc(card_cfg, [], subject=(ghost, 10), artifact_type="x/y")
    assert (
        c.put(f"/v2/{name}/manifests/early", content=early, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    )
    assert [d["digest"] for d in c.get(f"/v2/{name}/referrers/{ghost}").json()["manifests"]] == [sha256(early)]
    # Deleting a referrer removes it from the list.
    assert c.delete(f"/v2/{name}/manifests/{sha256(sig)}").status_code == 202
    assert [d["digest"] for d in c.get(f"/v2/{name}/referrers/{subject}").json()["manifests"]] == [sha256(card)]
    r = c.get(f"/v2/{name}/referrers/sha256:nothex")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert c.get(f"/v2/no/such/repo/referrers/{subject}").json()["manifests"] == []


# -- content management --------------------------------------------------------------------------------
def test_delete_tags_manifests_and_blobs(reg: Registry) -> None:
    c = reg.client
    name = "manage/delete"
    digest, raw = push_image(c, name, "keep", payload=b"delete me")
    assert c.put(f"/v2/{name}/manifests/untag", content=raw, headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    assert c.delete(f"/v2/{name}/manifests/untag").status_code == 202
    assert c.get(f"/v2/{name}/manifests/untag").status_code == 404
    assert c.get(f"/v2/{name}/manifests/{digest}").status_code == 200
    assert c.get(f"/v2/{name}/tags/list").json()["tags"] == ["keep"]
    assert c.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    assert c.get(f"/v2/{name}/manifests/{digest}").status_code == 404
    assert c.get(f"/v2/{name}/manifests/keep").status_code == 404  # tags on it went with it
    r = c.delete(f"/v2/{name}/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    layer = sha256(b"delete me")
    assert c.delete(f"/v2/{name}/blobs/{layer}").status_code == 202
    assert c.head(f"/v2/{name}/blobs/{layer}").status_code == 404
    r = c.delete(f"/v2/{name}/blobs/{layer}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


def test_unsupported_methods_and_unknown_paths(reg: Registry) -> None:
    c = reg.client
    r = c.post("/v2/a/manifests/latest")
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
    r = c.get("/v2/a/nothing-here")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/v2/../../etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/a/..%2f..%2f..%2fetc/manifests/latest", "NAME_INVALID"),
        ("/v2/%2e%2e/%2e%2e/blobs/sha256:" + "a" * 64, "NAME_INVALID"),
        ("/v2/%2fetc/tags/list", "NAME_INVALID"),
        ("/v2//etc/passwd/tags/list", "NAME_INVALID"),
        ("/v2/a\\..\\..\\etc/tags/list", "NAME_INVALID"),
        ("/v2/ok/manifests/..", "NAME_INVALID"),
        ("/v2/ok/manifests/..%2f..%2fx", "NAME_INVALID"),
        ("/v2/ok/blobs/sha256:..%2f..%2fetc", "NAME_INVALID"),
        ("/v2/ok/blobs/sha256:../../etc", "NAME_INVALID"),
        ("/v2/ok/blobs/sha256:abc", "DIGEST_INVALID"),
        ("/v2/ok/blobs/uploads/?digest=sha256:..%2f..%2fetc", "DIGEST_INVALID"),
        ("/v2/ok/blobs/uploads/?mount=sha256:" + "a" * 64 + "&from=..%2f..%2fetc", "NAME_INVALID"),
    ],
)
def test_traversal_is_rejected(reg: Registry, target: str, code: str) -> None:
    method = "POST" if "/uploads/" in target else "GET"
    status, body = raw_request(reg.url, method, target)
    assert status == 400, body
    assert json.loads(body)["errors"][0]["code"] == code


# -- storage guarantees --------------------------------------------------------------------------------
def test_concurrent_uploads_of_one_blob(reg: Registry) -> None:
    data = os.urandom(4 * 1024 * 1024)
    digest = sha256(data)
    name = "storage/concurrent"

    def upload(i: int) -> int:
        with httpx.Client(base_url=reg.url, timeout=60) as c:
            loc = c.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
            half = len(data) // 2
            c.patch(loc, content=data[:half], headers={"Content-Range": f"0-{half - 1}"})
            return c.put(loc, params={"digest": digest}, content=data[half:]).status_code

    uploads_before = set((reg.root / "uploads").iterdir())
    reads: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=reg.url, timeout=60) as c:
            while not stop.is_set():
                r = c.get(f"/v2/{name}/blobs/{digest}")
                if r.status_code == 200:
                    reads.append(r.content)

    t = threading.Thread(target=reader)
    t.start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(upload, range(8)))
    stop.set()
    t.join()
    assert statuses == [201] * 8
    assert all(body == data for body in reads)  # a reader never sees a partial blob
    assert reg.client.get(f"/v2/{name}/blobs/{digest}").content == data
    assert digest in blob_files(reg.root)
    assert set((reg.root / "uploads").iterdir()) == uploads_before


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_large_upload_is_streamed_not_buffered(reg: Registry) -> None:
    size, block = 96 * 1024 * 1024, os.urandom(1024 * 1024)
    h = hashlib.sha256()
    for _ in range(size // len(block)):
        h.update(block)
    digest = "sha256:" + h.hexdigest()
    before = _peak_rss_kib(reg.proc.pid)
    r = reg.client.post(
        "/v2/storage/large/blobs/uploads/",
        params={"digest": digest},
        content=(block for _ in range(size // len(block))),
    )
    assert r.status_code == 201, r.text
    grown_mib = (_peak_rss_kib(reg.proc.pid) - before) / 1024
    assert grown_mib < 40, f"server peak RSS grew by {grown_mib:.0f} MiB for a 96 MiB upload"
    assert (reg.root / "blobs" / "sha256" / digest.split(":")[1]).stat().st_size == size


def test_kill_9_during_upload_leaves_nothing_servable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server = start_registry(root)
    data = os.urandom(8 * 1024 * 1024)
    digest = sha256(data)
    loc = server.client.post("/v2/crash/blobs/uploads/").headers["Location"]
    upload_dir = root / "uploads" / loc.rsplit("/", 1)[1]
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        head = (
            f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: 0-{len(data) - 1}\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[: 6 * 1024 * 1024])
        deadline = time.monotonic() + 10
        while (upload_dir / "data").stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (upload_dir / "data").stat().st_size > 0, "the server never wrote the first part"
        server.stop(signal.SIGKILL)
        assert server.proc.returncode == -signal.SIGKILL
    finally:
        sock.close()
    assert digest not in blob_files(root)
    restarted = start_registry(root)
    try:
        c = restarted.client
        assert c.head(f"/v2/crash/blobs/{digest}").status_code == 404
        assert c.get(f"/v2/crash/blobs/{digest}").status_code == 404
        # The session survives the crash: its status is the bytes on disk, and it can be finished.
        r = c.get(loc)
        assert r.status_code == 204
        done = int(r.headers["Range"].split("-")[1]) + 1
        assert 0 < done < len(data)
        r = c.patch(loc, content=data[done:], headers={"Content-Range": f"{done}-{len(data) - 1}"})
        assert r.status_code == 202
        assert c.put(loc, params={"digest": digest}).status_code == 201
        assert c.get(f"/v2/crash/blobs/{digest}").content == data
    finally:
        restarted.stop()


def test_gc_removes_unreferenced_blobs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server = start_registry(root)
    try:
        c = server.client
        kept_digest, _ = push_image(c, "gc/repo", "keep", payload=b"kept layer")
        dropped_digest, _ = push_image(c, "gc/repo", "drop", payload=b"dropped layer")
        stray = push_blob(c, "gc/stray", b"never referenced")
        assert c.delete(f"/v2/gc/repo/manifests/{dropped_digest}").status_code == 202
    finally:
        server.stop()
    # what a kill -9 during an atomic write leaves: an old temp file goes, a fresh one (a write in flight) stays
    tags = next(p for p in root.rglob("*") if p.is_dir() and any(p.iterdir()))
    stale, fresh = tags / ".keep.123.abcd1234.tmp", tags / ".keep.456.ef012345.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    out = subprocess.run(
        [sys.executable, "-m", "registry", "gc", "--root", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    removed = set(out.stdout.split())
    assert removed == {sha256(b"dropped layer"), dropped_digest, stray}
    left = blob_files(root)
    assert {kept_digest, sha256(b"kept layer"), sha256(b"{}")} <= left and not (removed & left)
    assert not stale.exists() and fresh.exists()
    server = start_registry(root)
    try:
        c = server.client
        assert c.get("/v2/gc/repo/manifests/keep").status_code == 200
        assert c.get(f"/v2/gc/repo/blobs/{sha256(b'kept layer')}").content == b"kept layer"
        assert c.head(f"/v2/gc/stray/blobs/{stray}").status_code == 404
    finally:
        server.stop()


# -- auth ----------------------------------------------------------------------------------------------
@pytest.fixture()
def htpasswd(tmp_path: Path) -> Path:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path = tmp_path / "htpasswd"
    path.write_text(f"# users\nalice:{hashed}\n")
    return path


def test_htpasswd_push_needs_credentials(tmp_path: Path, htpasswd: Path) -> None:
    server = start_registry(tmp_path / "root", "--htpasswd", str(htpasswd))
    try:
        anon = server.client
        r = anon.get("/v2/")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="modelctl"'
        assert error_code(r) == "UNAUTHORIZED"
        r = anon.post("/v2/auth/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x")
        assert r.status_code == 401
        wrong = httpx.Client(base_url=server.url, auth=("alice", "wrong"))
        assert wrong.post("/v2/auth/blobs/uploads/").status_code == 401
        assert httpx.get(server.url + "/v2/", auth=("mallory", "s3cret")).status_code == 401
        alice = httpx.Client(base_url=server.url, auth=("alice", "s3cret"))
        digest, _ = push_image(alice, "auth/repo", "v1")
        assert anon.get("/v2/auth/repo/manifests/v1").status_code == 401
        assert alice.get("/v2/auth/repo/manifests/v1").status_code == 200
        assert not list((server.root / "repositories").glob("auth/blobs*"))
    finally:
        server.stop()
    server = start_registry(tmp_path / "root", "--htpasswd", str(htpasswd), "--allow-anonymous-pull")
    try:
        anon = server.client
        assert anon.get("/v2/").status_code == 200
        assert anon.get(f"/v2/auth/repo/manifests/{digest}").status_code == 200
        assert anon.get("/v2/auth/repo/tags/list").json()["tags"] == ["v1"]
        r = anon.post("/v2/auth/repo/blobs/uploads/")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="modelctl"'
        assert anon.delete(f"/v2/auth/repo/manifests/{digest}").status_code == 401
        r = anon.get(
            "/v2/auth/repo/manifests/v1",
            headers={"Authorization": "Basic " + base64.b64encode(b"alice:no").decode()},
        )
        assert r.status_code == 401
    finally:
        server.stop()


# -- pull-through cache in front of docker-registry with token auth ------------------------------------
@dataclass
class Distribution:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path


def start_docker_registry(tmp: Path, *, token: TokenServer | None = None) -> Distribution:
    port = servers.free_port()
    root = tmp / "distribution"
    root.mkdir(exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test"},
    }
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.rootcertbundle),
            }
        }
    (tmp / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    proc = subprocess.Popen(
        [str(DOCKER_REGISTRY), "serve", str(tmp / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "distribution.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/v2/", timeout=1)
            return Distribution(proc, url, root)
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError((tmp / "distribution.log").read_text()) from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("docker-registry did not start")


@pytest.mark.skipif(not DOCKER_REGISTRY.exists(), reason="needs Debian's docker-registry")
def test_pull_through_cache_over_token_auth(tmp_path: Path, token_server: TokenServer) -> None:
    token = token_server
    upstream = start_docker_registry(tmp_path, token=token)
    ours: Registry | None = None
    try:
        assert httpx.get(upstream.url + "/v2/").status_code == 401
        bearer = {"Authorization": "Bearer " + token.token("pusher", ("repository:ai/model:pull,push",))}
        up = httpx.Client(base_url=upstream.url, headers=bearer, timeout=30)
        layer_data = os.urandom(300_000)
        digest, raw = push_image(up, "ai/model", "latest", payload=layer_data)
        layer = sha256(layer_data)
        corrupt_data = os.urandom(5000)
        corrupt_layer = push_blob(up, "ai/model", corrupt_data)

        ours = start_registry(tmp_path / "cache", "--proxy", upstream.url, "--tag-ttl", "0")
        c = ours.client
        before = len(token.requests)
        r = c.get("/v2/ai/model/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == raw
        assert r.headers["Docker-Content-Digest"] == digest
        assert len(token.requests) > before and "repository:ai/model:pull" in " ".join(token.requests[-1].scopes)
        assert c.head(f"/v2/ai/model/blobs/{layer}").status_code == 200  # answered from upstream's HEAD
        r = c.get(f"/v2/ai/model/blobs/{layer}")
        assert r.status_code == 200 and r.content == layer_data
        assert layer in blob_files(ours.root)
        r = c.get(f"/v2/ai/model/blobs/{layer}", headers={"Range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == layer_data[5:10]
        assert c.get("/v2/ai/model/tags/list").json()["tags"] == ["latest"]
        assert c.get("/v2/ai/model/manifests/missing").status_code == 404
        assert c.get(f"/v2/ai/model/blobs/{sha256(b'nowhere')}").status_code == 404
        r = c.post("/v2/ai/model/blobs/uploads/")
        assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"

        # The cache verifies what the upstream sends: corrupt the upstream's copy of one blob.
        hexd = corrupt_layer.split(":")[1]
        data_file = upstream.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        data_file.write_bytes(b"X" + corrupt_data[1:])
        r = c.get(f"/v2/ai/model/blobs/{corrupt_layer}")
        assert r.status_code == 503 and error_code(r) == "UNAVAILABLE"
        assert corrupt_layer not in blob_files(ours.root)

        # Upstream gone: tags resolve to the last known answer, cached content is still served.
        upstream.proc.terminate()
        upstream.proc.wait(10)
        r = c.get("/v2/ai/model/manifests/latest")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        assert c.get(f"/v2/ai/model/blobs/{layer}").content == layer_data
        assert c.get("/v2/ai/model/tags/list").json()["tags"] == ["latest"]
        r = c.get("/v2/ai/other/manifests/latest")
        assert r.status_code == 503 and error_code(r) == "UNAVAILABLE"
    finally:
        if ours is not None:
            ours.stop()
        if upstream.proc.poll() is None:
            upstream.proc.kill()
            upstream.proc.wait(10)
        shutil.rmtree(upstream.root, ignore_errors=True)
