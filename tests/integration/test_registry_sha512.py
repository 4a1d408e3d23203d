"""sha512 on our registry (`python -m registry`) as a real process: blobs pushed every way the OCI spec allows
(monolithic POST, POST+PUT, chunked PATCH+PUT, streamed, cancelled), mounted, ranged, deleted; manifests pushed,
read and deleted by a sha512 digest; referrers of a sha512 subject; gc; and modelctl pushing and pulling
``@sha512:`` against it (no shim: unlike distribution 2.8, ours names manifests by sha512 too)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import servers
from helpers.oci_layout import TINY_MODEL_CONFIG, model_manifest

ROOT = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_SHA512 = (
    "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


class Ours:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc, self.url, self.log = servers.start_ours(root)
        self.host = self.url.removeprefix("http://")
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        servers.stop(self.proc)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ours]:
    server = Ours(tmp_path_factory.mktemp("ours512") / "root")
    yield server
    server.stop()


def with_digest(location: str, digest: str) -> httpx.URL:
    return httpx.URL(location).copy_merge_params({"digest": digest})


def push_blob(c: httpx.Client, name: str, data: bytes) -> str:
    digest = sha512(data)
    r = c.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = c.put(with_digest(r.headers["Location"], digest), content=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


def error_code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


def manifest_doc(config: str, layers: list[tuple[str, int]], subject: tuple[str, int] | None = None) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": s} for d, s in layers],
    }
    if subject:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject[0], "size": subject[1]}
    return json.dumps(doc).encode()


def put_manifest(c: httpx.Client, name: str, ref: str, raw: bytes) -> httpx.Response:
    return c.put(f"/v2/{name}/manifests/{ref}", content=raw, headers={"Content-Type": OCI_MANIFEST})


def check_blob(c: httpx.Client, name: str, digest: str, data: bytes) -> None:
    r = c.get(f"/v2/{name}/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    h = c.head(f"/v2/{name}/blobs/{digest}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data)


# -- blobs ---------------------------------------------------------------------------------------------
def test_monolithic_post_and_post_put(reg: Ours) -> None:
    c = reg.client
    data = os.urandom(5000)
    r = c.post("/v2/s512/mono/blobs/uploads/", params={"digest": sha512(data)}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/s512/mono/blobs/{sha512(data)}"
    check_blob(c, "s512/mono", sha512(data), data)
    other = os.urandom(5000)
    assert push_blob(c, "s512/mono", other) == sha512(other)
    check_blob(c, "s512/mono", sha512(other), other)
    hex_part = sha512(other).removeprefix("sha512:")
    assert (reg.root / "blobs" / "sha512" / hex_part).read_bytes() == other
    assert not (reg.root / "blobs" / "sha256" / hashlib.sha256(other).hexdigest()).exists()
    # the same bytes by their sha256 digest are not found: each is stored under the algorithm it was pushed by
    assert c.head(f"/v2/s512/mono/blobs/{sha256(other)}").status_code == 404


def test_digest_mismatch_and_malformed(reg: Ours) -> None:
    c = reg.client
    data = b"sha512 mismatch " + os.urandom(8)
    loc = c.post("/v2/s512/bad/blobs/uploads/").headers["Location"]
    r = c.put(with_digest(loc, sha512(b"other")), content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = c.post("/v2/s512/bad/blobs/uploads/", params={"digest": sha512(b"other")}, content=data)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert c.head(f"/v2/s512/bad/blobs/{sha512(data)}").status_code == 404
    for bogus in ("sha512:" + "a" * 127, "sha512:" + "A" * 128, "sha512:../../" + "a" * 122, "sha384:" + "a" * 96):
        r = c.post("/v2/s512/bad/blobs/uploads/", params={"digest": bogus}, content=data)
        assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", bogus
    r = c.get("/v2/s512/bad/blobs/sha512:" + "a" * 127)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_chunked_upload(reg: Ours) -> None:
    c = reg.client
    data = os.urandom(30_000)
    loc = c.post("/v2/s512/chunked/blobs/uploads/", headers={"Content-Length": "0"}).headers["Location"]
    r = c.patch(loc, content=data[:10_000], headers={"Content-Range": "0-9999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9999"
    r = c.patch(r.headers["Location"], content=data[10_000:20_000], headers={"Content-Range": "10000-19999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-19999"
    r = c.put(
        with_digest(r.headers["Location"], sha512(data)),
        content=data[20_000:],
        headers={"Content-Range": "20000-29999"},
    )
    assert r.status_code == 201, r.text
    check_blob(c, "s512/chunked", sha512(data), data)
    assert c.get(loc).status_code == 404


def test_streamed_upload_and_cancel(reg: Ours) -> None:
    c = reg.client
    data = os.urandom(3 * 1024 * 1024 + 17)
    loc = c.post("/v2/s512/stream/blobs/uploads/").headers["Location"]
    r = c.patch(loc, content=iter([data[:1_000_000], data[1_000_000:]]))  # chunked transfer encoding
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    assert c.put(with_digest(r.headers["Location"], sha512(data))).status_code == 201
    check_blob(c, "s512/stream", sha512(data), data)
    cancelled = os.urandom(100)
    loc = c.post("/v2/s512/stream/blobs/uploads/").headers["Location"]
    assert c.patch(loc, content=cancelled).status_code == 202
    assert c.delete(loc).status_code == 204
    assert c.get(loc).status_code == 404
    r = c.put(with_digest(loc, sha512(cancelled)))
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    assert c.head(f"/v2/s512/stream/blobs/{sha512(cancelled)}").status_code == 404


def test_empty_and_empty_json_blobs(reg: Ours) -> None:
    c = reg.client
    assert sha512(b"") == EMPTY_SHA512
    loc = c.post("/v2/s512/empty/blobs/uploads/").headers["Location"]
    r = c.put(with_digest(loc, EMPTY_SHA512), headers={"Content-Length": "0"})
    assert r.status_code == 201, r.text
    check_blob(c, "s512/empty", EMPTY_SHA512, b"")
    r = c.post("/v2/s512/empty/blobs/uploads/", params={"digest": EMPTY_SHA512}, content=b"")
    assert r.status_code == 201, r.text
    assert push_blob(c, "s512/empty", b"{}") == sha512(b"{}")
    check_blob(c, "s512/empty", sha512(b"{}"), b"{}")


def test_mount(reg: Ours) -> None:
    c = reg.client
    data = os.urandom(1000)
    digest = push_blob(c, "s512/mount/source", data)
    assert c.head(f"/v2/s512/mount/target/blobs/{digest}").status_code == 404
    r = c.post("/v2/s512/mount/target/blobs/uploads/", params={"mount": digest, "from": "s512/mount/elsewhere"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    r = c.post("/v2/s512/mount/target/blobs/uploads/", params={"mount": digest, "from": "s512/mount/source"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/s512/mount/target/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    check_blob(c, "s512/mount/target", digest, data)


def test_ranges_head_and_delete(reg: Ours) -> None:
    c = reg.client
    data = os.urandom(100_000)
    digest = push_blob(c, "s512/range", data)
    r = c.get(f"/v2/s512/range/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = c.get(f"/v2/s512/range/blobs/{digest}", headers={"Range": "bytes=99990-"})
    assert r.status_code == 206 and r.content == data[99990:]
    assert c.get(f"/v2/s512/range/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    missing = sha512(b"missing")
    r = c.get(f"/v2/s512/range/blobs/{missing}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    assert c.head(f"/v2/s512/range/blobs/{missing}").status_code == 404
    assert c.delete(f"/v2/s512/range/blobs/{digest}").status_code == 202
    assert c.head(f"/v2/s512/range/blobs/{digest}").status_code == 404
    r = c.delete(f"/v2/s512/range/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


# -- manifests -----------------------------------------------------------------------------------------
def push_image(c: httpx.Client, name: str, payload: bytes) -> bytes:
    config, layer = push_blob(c, name, b"{}"), push_blob(c, name, payload)
    return manifest_doc(config, [(layer, len(payload))])


def test_manifest_by_sha512_digest(reg: Ours) -> None:
    c, name = reg.client, "s512/manifest"
    raw = push_image(c, name, b"a sha512 layer")
    digest = sha512(raw)
    r = put_manifest(c, name, digest, raw)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"] == f"/v2/{name}/manifests/{digest}"
    hex_part = digest.removeprefix("sha512:")
    assert (reg.root / "blobs" / "sha512" / hex_part).read_bytes() == raw
    r = c.get(f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == raw
    assert r.headers["Docker-Content-Digest"] == digest and r.headers["Content-Type"] == OCI_MANIFEST
    h = c.head(f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert h.status_code == 200 and h.content == b"" and int(h.headers["Content-Length"]) == len(raw)
    assert h.headers["Docker-Content-Digest"] == digest
    # the body must match the sha512 reference
    r = put_manifest(c, name, sha512(raw + b" "), raw)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    # by tag the canonical digest stays sha256
    r = put_manifest(c, name, "v1", raw)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha256(raw)
    assert c.get(f"/v2/{name}/manifests/v1").headers["Docker-Content-Digest"] == sha256(raw)
    # delete by the sha512 digest: the sha256 revision (and its tag) stay
    assert c.delete(f"/v2/{name}/manifests/{digest}").status_code == 202
    r = c.get(f"/v2/{name}/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert c.head(f"/v2/{name}/manifests/{digest}").status_code == 404
    assert c.get(f"/v2/{name}/manifests/v1").status_code == 200
    assert c.delete(f"/v2/{name}/manifests/{digest}").status_code == 404


def test_referrers_of_sha512_subject(reg: Ours) -> None:
    c, name = reg.client, "s512/referrers"
    raw = push_image(c, name, b"subject layer")
    subject = sha512(raw)
    assert put_manifest(c, name, subject, raw).status_code == 201
    config = push_blob(c, name, b"{}")
    card = manifest_doc(config, [], subject=(subject, len(raw)))
    r = put_manifest(c, name, sha512(card), card)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject
    sig = manifest_doc(config, [(config, 2)], subject=(subject, len(raw)))
    assert put_manifest(c, name, sha256(sig), sig).status_code == 201  # a sha256 referrer of a sha512 subject
    r = c.get(f"/v2/{name}/referrers/{subject}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    assert sorted(d["digest"] for d in r.json()["manifests"]) == sorted([sha512(card), sha256(sig)])
    assert c.delete(f"/v2/{name}/manifests/{sha512(card)}").status_code == 202
    assert [d["digest"] for d in c.get(f"/v2/{name}/referrers/{subject}").json()["manifests"]] == [sha256(sig)]


# -- gc ------------------------------------------------------------------------------------------------
def blob_files(root: Path) -> set[str]:
    return {
        f"{alg}:{p.name}"
        for alg in ("sha256", "sha512")
        if (root / "blobs" / alg).is_dir()
        for p in (root / "blobs" / alg).iterdir()
        if not p.name.startswith(".")
    }


def test_gc_keeps_and_removes_sha512_blobs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server = Ours(root)
    try:
        c = server.client
        kept = push_image(c, "gc512/repo", b"kept layer")
        assert put_manifest(c, "gc512/repo", sha512(kept), kept).status_code == 201
        dropped = push_image(c, "gc512/repo", b"dropped layer")
        assert put_manifest(c, "gc512/repo", sha512(dropped), dropped).status_code == 201
        stray = push_blob(c, "gc512/stray", b"never referenced")
        assert c.delete(f"/v2/gc512/repo/manifests/{sha512(dropped)}").status_code == 202
    finally:
        server.stop()
    out = subprocess.run(
        [sys.executable, "-m", "registry", "gc", "--root", str(root)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    removed = set(out.stdout.split())
    assert removed == {sha512(b"dropped layer"), sha512(dropped), stray}
    left = blob_files(root)
    assert {sha512(kept), sha512(b"kept layer"), sha512(b"{}")} <= left and not (removed & left)
    server = Ours(root)
    try:
        c = server.client
        assert c.get(f"/v2/gc512/repo/manifests/{sha512(kept)}").content == kept
        assert c.get(f"/v2/gc512/repo/blobs/{sha512(b'kept layer')}").content == b"kept layer"
        assert c.head(f"/v2/gc512/stray/blobs/{stray}").status_code == 404
    finally:
        server.stop()


# -- modelctl against it -------------------------------------------------------------------------------
def modelctl(*args: str, home: Path | None = None) -> str:
    env = dict(os.environ) if home is None else dict(os.environ, MODELCTL_HOME=str(home))
    result = subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_modelctl_push_then_pull_by_sha512_digest(reg: Ours, tiny_gguf: Path, tmp_path: Path) -> None:
    """A sha512-named model (raw HTTP, manifest PUT by its sha512 digest) pulled ``@sha512:`` by modelctl, pushed
    by modelctl to another repository (sha512 blobs, manifest by digest), then pulled ``@sha512:`` from there."""
    c, gguf = reg.client, tiny_gguf.read_bytes()
    config = TINY_MODEL_CONFIG
    layer, config_digest = push_blob(c, "ai/tiny512", gguf), push_blob(c, "ai/tiny512", config)
    manifest = model_manifest(config_digest, len(config), layer, len(gguf))
    digest = sha512(manifest)
    assert put_manifest(c, "ai/tiny512", digest, manifest).status_code == 201

    pinned = f"{reg.host}/ai/tiny512@{digest}"
    doc = json.loads(modelctl("pull", "--json", pinned))["models"][0]
    assert doc["digest"] == digest
    assert Path(modelctl("path", pinned).strip()).read_bytes() == gguf

    copy = f"{reg.host}/ai/copy512@{digest}"
    modelctl("tag", pinned, copy)
    modelctl("push", copy)
    assert c.head(f"/v2/ai/copy512/blobs/{layer}").status_code == 200
    assert c.get(f"/v2/ai/copy512/manifests/{digest}").content == manifest
    other = tmp_path / "other-home"
    doc = json.loads(modelctl("pull", "--json", copy, home=other))["models"][0]
    assert doc["digest"] == digest
    assert Path(modelctl("path", copy, home=other).strip()).read_bytes() == gguf
    store512 = other / "store" / "blobs" / "sha512"
    assert (store512 / digest.removeprefix("sha512:")).read_bytes() == manifest
    assert (store512 / layer.removeprefix("sha512:")).read_bytes() == gguf


def test_upload_resumed_after_restart_completes_as_sha512(tmp_path: Path) -> None:
    """A session reloaded from disk has no hash state: the staged file is hashed once with the PUT's algorithm."""
    root, data = tmp_path / "root", os.urandom(200_000)
    server = Ours(root)
    try:
        r = server.client.post("/v2/s512/restart/blobs/uploads/")
        r = server.client.patch(r.headers["Location"], content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
        assert r.status_code == 202
        loc = r.headers["Location"]
    finally:
        server.stop()
    server = Ours(root)
    try:
        r = server.client.put(with_digest(loc, sha512(data)))
        assert r.status_code == 201, r.text
        check_blob(server.client, "s512/restart", sha512(data), data)
    finally:
        server.stop()
