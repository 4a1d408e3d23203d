"""The OCI distribution-spec conformance suite's behaviour classes, run against our registry AND Debian's
docker-registry (distribution 2.8), real processes on loopback, raw HTTP.

One test per class the suite checks (``scripts/conformance.sh`` runs the suite itself). Where distribution 2.8
lacks a behaviour its param is ``xfail(strict=True)`` with the reason, so the difference stays visible and a
change on either side (ours regressing, distribution's package gaining it) fails the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers import servers

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
FOREIGN_PLAIN = "application/vnd.oci.image.layer.nondistributable.v1.tar"


@dataclass
class Target:
    kind: str
    url: str
    client: httpx.Client


@pytest.fixture(scope="module")
def reg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """``ours`` (python -m registry), ``ours-sparse`` (with --allow-sparse) or ``distribution``; one per module."""
    kind: str = request.param
    root = tmp_path_factory.mktemp(kind)
    with contextlib.ExitStack() as stack:
        if kind == "distribution":
            url = stack.enter_context(servers.docker_registry(root)).url
        else:
            proc, url, _log = servers.start_ours(root / "data", *(["--allow-sparse"] if kind == "ours-sparse" else []))
            stack.callback(servers.stop, proc)
        client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        yield Target(kind, url, client)


def lacks(reason: str, *values: str, raises: tuple[type[BaseException], ...] = (AssertionError,)) -> Any:
    """The distribution param (with ``values`` for the test's other parameters) of a behaviour distribution 2.8
    does not have: a strict xfail."""
    return pytest.param(
        "distribution",
        *values,
        marks=pytest.mark.xfail(strict=True, raises=raises, reason=f"distribution 2.8 {reason}"),
    )


BOTH = pytest.mark.parametrize("reg", ["ours", "distribution"], indirect=True)


def both_but(reason: str, **kwargs: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("reg", ["ours", lacks(reason, **kwargs)], indirect=True)


SHA512_NAMES = "accepts a sha512 push but names the blob by sha256 (Docker-Content-Digest) and serves it only so"


# -- protocol helpers ------------------------------------------------------------------------------------
def digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def with_digest(location: str, value: str) -> httpx.URL:
    return httpx.URL(location).copy_merge_params({"digest": value})


def error_code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


def start(c: httpx.Client, repo: str) -> str:
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"]


def push_blob(c: httpx.Client, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    value = digest(data, algorithm)
    r = c.put(with_digest(start(c, repo), value), content=data)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == value
    return value


def check_blob(c: httpx.Client, repo: str, value: str, data: bytes) -> None:
    head = c.head(f"/v2/{repo}/blobs/{value}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers.get("Docker-Content-Digest") == value
    got = c.get(f"/v2/{repo}/blobs/{value}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers.get("Docker-Content-Digest") == value


def image(c: httpx.Client, repo: str, *, layers: int = 1, extra: list[dict[str, Any]] | None = None) -> bytes:
    """Push a config and ``layers`` layers (sha256); the manifest's bytes (not pushed), with ``extra`` layers."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_digest = push_blob(c, repo, config.encode())
    descriptors = []
    for i in range(layers):
        data = f"{repo} layer {i}".encode()
        descriptors.append({"mediaType": LAYER, "digest": push_blob(c, repo, data), "size": len(data)})
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": descriptors + (extra or []),
    }
    return json.dumps(doc).encode()


def put_manifest(c: httpx.Client, repo: str, ref: str, raw: bytes, **kwargs: Any) -> httpx.Response:
    media_type = json.loads(raw)["mediaType"]
    return c.put(f"/v2/{repo}/manifests/{ref}", content=raw, headers={"Content-Type": media_type}, **kwargs)


def check_manifest(c: httpx.Client, repo: str, ref: str, raw: bytes, value: str) -> None:
    """HEAD and GET by ``ref`` answer ``raw`` byte for byte, with its media type and digest."""
    media_type = json.loads(raw)["mediaType"]
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    head = c.head(f"/v2/{repo}/manifests/{ref}", headers=accept)
    assert head.status_code == 200, ref
    assert head.headers["Content-Type"] == media_type
    assert head.headers["Content-Length"] == str(len(raw))
    assert head.headers.get("Docker-Content-Digest") == value
    got = c.get(f"/v2/{repo}/manifests/{ref}", headers=accept)
    assert got.status_code == 200, ref
    assert got.content == raw
    assert got.headers.get("Docker-Content-Digest") == value


def tags(c: httpx.Client, repo: str, **params: Any) -> httpx.Response:
    r = c.get(f"/v2/{repo}/tags/list", params=params)
    assert r.status_code == 200, r.text
    return r


# -- blobs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reg", "algorithm"),
    [("ours", "sha256"), ("ours", "sha512"), ("distribution", "sha256"), lacks(SHA512_NAMES, "sha512")],
    indirect=["reg"],
)
def test_push_kinds(reg: Target, algorithm: str) -> None:
    """POST+PUT, chunked (PUT empty or carrying the last chunk), streamed PATCH, the empty blob and the empty JSON,
    each readable by its digest afterwards."""
    c, repo = reg.client, f"kinds/{algorithm}"
    data = bytes(range(256)) * 12
    pushed: dict[str, bytes] = {}
    value = push_blob(c, repo, data, algorithm)
    pushed[value] = data

    for put_last in (False, True):
        blob = data + (b"L" if put_last else b"P")
        location, value = start(c, repo), digest(blob, algorithm)
        chunks = [blob[i : i + 1024] for i in range(0, len(blob), 1024)]
        offset = 0
        for i, chunk in enumerate(chunks):
            span = {"Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Type": "application/octet-stream"}
            if put_last and i == len(chunks) - 1:
                r = c.put(with_digest(location, value), content=chunk, headers=span)
                assert r.status_code == 201, r.text
            else:
                r = c.patch(location, content=chunk, headers=span)
                assert r.status_code == 202, r.text
                assert r.headers["Range"] == f"0-{offset + len(chunk) - 1}"
                location = r.headers["Location"]
            offset += len(chunk)
        if not put_last:
            r = c.put(with_digest(location, value))
            assert r.status_code == 201, r.text
        assert r.headers.get("Docker-Content-Digest") == value
        pushed[value] = blob

    streamed = data + b"S"
    r = c.patch(start(c, repo), content=streamed, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    r = c.put(with_digest(r.headers["Location"], digest(streamed, algorithm)))
    assert r.status_code == 201, r.text
    pushed[digest(streamed, algorithm)] = streamed

    for small in (b"", b"{}"):
        pushed[push_blob(c, repo, small, algorithm)] = small
    for value, blob in pushed.items():
        check_blob(c, repo, value, blob)


@both_but("ignores the body of a monolithic POST ?digest= and opens a session (202); the spec allows it")
def test_monolithic_post(reg: Target) -> None:
    c, data = reg.client, b"one request"
    r = c.post("/v2/mono/blobs/uploads/", params={"digest": digest(data)}, content=data)
    assert r.status_code == 201, r.text
    check_blob(c, "mono", digest(data), data)


@both_but("takes an out-of-order chunk with 202 instead of 416")
def test_out_of_order_chunk(reg: Target) -> None:
    """A chunk that does not continue the upload is 416; the upload's status still says 0-9 and it completes."""
    c, data = reg.client, bytes(range(30))
    location = start(c, "order")
    r = c.patch(location, content=data[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 202
    location = r.headers["Location"]
    r = c.patch(location, content=data[20:], headers={"Content-Range": "20-29"})
    assert r.status_code == 416
    status = c.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-9"
    r = c.patch(status.headers["Location"], content=data[10:], headers={"Content-Range": "10-29"})
    assert r.status_code == 202
    assert c.put(with_digest(r.headers["Location"], digest(data))).status_code == 201
    check_blob(c, "order", digest(data), data)


@BOTH
def test_wrong_digest_is_refused(reg: Target) -> None:
    c = reg.client
    r = c.put(with_digest(start(c, "wrong"), digest(b"other")), content=b"these bytes")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert c.head(f"/v2/wrong/blobs/{digest(b'other')}").status_code == 404
    assert c.head(f"/v2/wrong/blobs/{digest(b'these bytes')}").status_code == 404


@pytest.mark.parametrize(
    ("reg", "algorithm"),
    [("ours", "sha256"), ("ours", "sha512"), ("distribution", "sha256"), lacks(SHA512_NAMES, "sha512")],
    indirect=["reg"],
)
def test_mount(reg: Target, algorithm: str) -> None:
    """Mount from a repository holding the blob (201); from one that does not: an upload session (202)."""
    c, data = reg.client, f"mounted {algorithm}".encode()
    value = push_blob(c, f"mount/{algorithm}/src", data, algorithm)
    target = f"mount/{algorithm}/dst"
    missing = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": value, "from": "mount/nowhere"})
    assert missing.status_code == 202
    assert missing.headers["Location"]
    r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": value, "from": f"mount/{algorithm}/src"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/{target}/blobs/{value}")
    check_blob(c, target, value, data)


@both_but("answers a mount without from with an upload session (202); the spec allows it")
def test_anonymous_mount(reg: Target) -> None:
    c, data = reg.client, b"mounted without from"
    value = push_blob(c, "anon/src", data)
    r = c.post("/v2/anon/dst/blobs/uploads/", params={"mount": value})
    assert r.status_code == 201, r.text
    check_blob(c, "anon/dst", value, data)


@pytest.mark.parametrize(
    ("reg", "algorithm"),
    [("ours", "sha256"), ("ours", "sha512"), ("distribution", "sha256"), lacks(SHA512_NAMES, "sha512")],
    indirect=["reg"],
)
def test_ranged_get(reg: Target, algorithm: str) -> None:
    c, data = reg.client, bytes(range(256)) * 8
    value = push_blob(c, "ranges", data, algorithm)
    for header, start_, end in (
        ("500-1499", 500, 1499),
        ("500-", 500, 2047),
        ("-500", 1548, 2047),
        ("2000-5000", 2000, 2047),
    ):
        r = c.get(f"/v2/ranges/blobs/{value}", headers={"Range": f"bytes={header}"})
        assert r.status_code == 206, header
        assert r.content == data[start_ : end + 1], header
        assert r.headers["Content-Range"] in (f"bytes {start_}-{end}/{len(data)}", f"bytes {start_}-{end}/*")


@both_but("answers bytes=500-0 and bytes=5000-10000 with a cut-off body", raises=(AssertionError, httpx.HTTPError))
def test_unsatisfiable_range(reg: Target) -> None:
    c, data = reg.client, bytes(2048)
    value = push_blob(c, "ranges416", data)
    for header in ("bytes=500-0", "bytes=5000-10000"):
        assert c.get(f"/v2/ranges416/blobs/{value}", headers={"Range": header}).status_code == 416, header


@BOTH
def test_upload_cancel(reg: Target) -> None:
    """DELETE of an upload session ends it: its status and its completion are 404 BLOB_UPLOAD_UNKNOWN."""
    c = reg.client
    r = c.patch(start(c, "cancel"), content=b"half", headers={"Content-Type": "application/octet-stream"})
    location = r.headers["Location"]
    assert c.delete(location).status_code == 204
    status = c.get(location)
    assert status.status_code == 404
    assert error_code(status) == "BLOB_UPLOAD_UNKNOWN"
    assert c.put(with_digest(location, digest(b"half"))).status_code == 404
    assert c.head(f"/v2/cancel/blobs/{digest(b'half')}").status_code == 404


# -- manifests -------------------------------------------------------------------------------------------
@BOTH
def test_digest_headers(reg: Target) -> None:
    """Docker-Content-Digest on blob PUT, HEAD and GET (check_blob) and on manifest PUT, HEAD and GET by tag and
    by digest; the Location of a manifest PUT serves it."""
    c = reg.client
    raw = image(c, "headers")
    r = put_manifest(c, "headers", "v1", raw)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == digest(raw)
    assert c.get(r.headers["Location"], headers={"Accept": OCI_MANIFEST}).content == raw
    for ref in ("v1", digest(raw)):
        check_manifest(c, "headers", ref, raw, digest(raw))


@both_but("names manifests by sha256 only: a PUT by a sha512 digest is refused")
def test_manifest_by_sha512_digest(reg: Target) -> None:
    c = reg.client
    raw = image(c, "m512")
    value = digest(raw, "sha512")
    r = put_manifest(c, "m512", value, raw)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == value
    check_manifest(c, "m512", value, raw, value)
    assert c.delete(f"/v2/m512/manifests/{value}").status_code == 202
    assert c.get(f"/v2/m512/manifests/{value}").status_code == 404


@both_but("answers a malformed digest reference with 500")
def test_malformed_digest_reference(reg: Target) -> None:
    c = reg.client
    raw = image(c, "baddigest")
    assert put_manifest(c, "baddigest", "sha256:baddigeststring", raw).status_code == 400
    assert c.get("/v2/baddigest/manifests/sha256:baddigeststring").status_code in (400, 404)


@BOTH
def test_manifest_body_not_matching_its_digest(reg: Target) -> None:
    c = reg.client
    raw = image(c, "mismatch")
    r = put_manifest(c, "mismatch", digest(raw), raw + b"  ")
    assert r.status_code == 400
    assert c.get(f"/v2/mismatch/manifests/{digest(raw)}").status_code == 404


@BOTH
def test_delete_manifest_and_blob(reg: Target) -> None:
    c = reg.client
    raw = image(c, "delete")
    assert put_manifest(c, "delete", "v1", raw).status_code == 201
    assert c.delete(f"/v2/delete/manifests/{digest(raw)}").status_code == 202
    assert c.get(f"/v2/delete/manifests/{digest(raw)}").status_code == 404
    assert c.get("/v2/delete/manifests/v1").status_code == 404
    layer = json.loads(raw)["layers"][0]["digest"]
    assert c.delete(f"/v2/delete/blobs/{layer}").status_code == 202
    assert c.head(f"/v2/delete/blobs/{layer}").status_code == 404


@both_but("cannot delete a tag: DELETE /manifests/<tag> answers 400 DIGEST_INVALID")
def test_delete_tag(reg: Target) -> None:
    c = reg.client
    raw = image(c, "untag")
    for tag in ("a", "b"):
        assert put_manifest(c, "untag", tag, raw).status_code == 201
    assert c.delete("/v2/untag/manifests/a").status_code == 202
    assert c.get("/v2/untag/manifests/a").status_code == 404
    check_manifest(c, "untag", "b", raw, digest(raw))
    check_manifest(c, "untag", digest(raw), raw, digest(raw))


@BOTH
def test_nondistributable_layers(reg: Target) -> None:
    """Layers with a non-distributable media type and ``urls`` are never pushed: the manifest is accepted
    without them and served by tag and digest; the registry does not claim to hold their blobs."""
    c = reg.client
    foreign = []
    for media_type, seed in ((FOREIGN, b"gz"), (FOREIGN_PLAIN, b"tar")):
        value = digest(b"foreign " + seed)
        url = f"https://store.example.com/blobs/sha256/{value.split(':')[1]}"
        foreign.append({"mediaType": media_type, "digest": value, "size": 123456, "urls": [url]})
    raw = image(c, "foreign", extra=foreign)
    r = put_manifest(c, "foreign", digest(raw), raw)
    assert r.status_code == 201, r.text
    assert put_manifest(c, "foreign", "nondistributable", raw).status_code == 201
    assert "nondistributable" in tags(c, "foreign").json()["tags"]
    for ref in ("nondistributable", digest(raw)):
        check_manifest(c, "foreign", ref, raw, digest(raw))
    for layer in foreign:
        assert c.head(f"/v2/foreign/blobs/{layer['digest']}").status_code == 404


@BOTH
def test_nondistributable_without_urls_needs_its_blob(reg: Target) -> None:
    c = reg.client
    layer = {"mediaType": FOREIGN, "digest": digest(b"never pushed"), "size": 12}
    raw = image(c, "foreign-nourl", extra=[layer])
    r = put_manifest(c, "foreign-nourl", "v1", raw)
    assert r.status_code == 400
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"


# -- sparse manifests ------------------------------------------------------------------------------------
def sparse_image_and_index(c: httpx.Client, repo: str) -> tuple[bytes, bytes]:
    """An image whose second layer was never pushed, and an index of a pushed image and a never-pushed one."""
    missing = {"mediaType": LAYER, "digest": digest(repo.encode() + b" missing"), "size": 9}
    sparse_image = image(c, repo, extra=[missing])
    present = image(c, repo)
    assert put_manifest(c, repo, digest(present), present).status_code == 201
    platforms = ({"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"})
    children = ((digest(present), len(present)), (digest(repo.encode() + b" absent"), 1024))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": size, "platform": p}
            for (d, size), p in zip(children, platforms, strict=True)
        ],
    }
    return sparse_image, json.dumps(index).encode()


@BOTH
def test_sparse_manifests_refused_by_default(reg: Target) -> None:
    c = reg.client
    for raw in sparse_image_and_index(c, "sparse-default"):
        r = put_manifest(c, "sparse-default", "v1", raw)
        assert r.status_code == 400
        assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize(
    "reg",
    ["ours-sparse", lacks("has no setting to accept an image or index whose parts were not pushed")],
    indirect=True,
)
def test_sparse_manifests_accepted_when_allowed(reg: Target) -> None:
    c = reg.client
    for tag, raw in zip(("sparse-image", "sparse-index"), sparse_image_and_index(c, "sparse"), strict=True):
        r = put_manifest(c, "sparse", tag, raw)
        assert r.status_code == 201, r.text
        check_manifest(c, "sparse", tag, raw, digest(raw))
        check_manifest(c, "sparse", digest(raw), raw, digest(raw))
    assert {"sparse-image", "sparse-index"} <= set(tags(c, "sparse").json()["tags"])


# -- tags ------------------------------------------------------------------------------------------------
@both_but("ignores ?tag= on a manifest PUT: no OCI-Tag header, no tag")
def test_tag_parameter(reg: Target) -> None:
    """PUT by digest with ?tag= creates each tag and names it in OCI-Tag, for a sha256 and a sha512 digest."""
    c = reg.client
    raw = image(c, "tagparam")
    for algorithm in ("sha256", "sha512"):
        value, wanted = digest(raw, algorithm), [f"{algorithm}-a", f"{algorithm}-b"]
        r = put_manifest(c, "tagparam", value, raw, params=[("tag", t) for t in wanted])
        assert r.status_code == 201, r.text
        echoed = {t.strip() for line in r.headers.get_list("OCI-Tag") for t in line.split(",")}
        assert set(wanted) <= echoed
        for tag in wanted:
            check_manifest(c, "tagparam", tag, raw, value)
    assert {"sha256-a", "sha256-b", "sha512-a", "sha512-b"} <= set(tags(c, "tagparam").json()["tags"])


@pytest.mark.parametrize("reg", ["ours"], indirect=True)
def test_tag_parameter_is_validated(reg: Target) -> None:
    """Ours only: a malformed tag parameter is NAME_INVALID and more than 100 are 414, before anything is stored."""
    c = reg.client
    raw = image(c, "tagparam-bad")
    r = put_manifest(c, "tagparam-bad", digest(raw), raw, params={"tag": "../escape"})
    assert r.status_code == 400
    assert error_code(r) == "NAME_INVALID"
    r = put_manifest(c, "tagparam-bad", digest(raw), raw, params=[("tag", f"t{i}") for i in range(101)])
    assert r.status_code == 414
    assert c.get(f"/v2/tagparam-bad/manifests/{digest(raw)}").status_code == 404


@both_but("lists tags unsorted and ignores n and last")
def test_tag_pagination(reg: Target) -> None:
    """Tags come sorted; n pages them with a Link to the next page; last alone starts after it."""
    c = reg.client
    raw = image(c, "pages")
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    for tag in names:
        assert put_manifest(c, "pages", tag, raw).status_code == 201
    assert tags(c, "pages").json()["tags"] == sorted(names)
    seen: list[str] = []
    r = tags(c, "pages", n=2)
    while True:
        page = r.json()["tags"]
        assert len(page) <= 2
        seen += page
        link = r.headers.get("Link")
        if not link:
            break
        found = re.match(r"<([^>]+)>;\s*rel=\"next\"", link)
        assert found, link
        r = c.get(found.group(1))
    assert seen == sorted(names)
    assert tags(c, "pages", last="bravo").json()["tags"] == ["charlie", "delta", "echo"]


# -- referrers -------------------------------------------------------------------------------------------
@both_but("has no referrers API (404) and answers a manifest with a subject without OCI-Subject")
def test_referrers(reg: Target) -> None:
    """An artifact (and an index) with a subject: OCI-Subject on the PUT, listed by the referrers API, filterable
    by artifactType; a subject never pushed is allowed; an unknown subject lists an empty index."""
    c = reg.client
    subject = image(c, "refs")
    assert put_manifest(c, "refs", "v1", subject).status_code == 201
    empty = push_blob(c, "refs", b"{}")
    absent = {"mediaType": OCI_MANIFEST, "digest": digest(b"never pushed subject"), "size": 99}
    present = {"mediaType": OCI_MANIFEST, "digest": digest(subject), "size": len(subject)}
    pushed = []
    for kind, subj in (("application/vnd.example.sig", present), ("application/vnd.example.sbom", absent)):
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": EMPTY_JSON, "digest": empty, "size": 2},
            "layers": [{"mediaType": EMPTY_JSON, "digest": empty, "size": 2}],
            "subject": subj,
        }
        raw = json.dumps(doc).encode()
        r = put_manifest(c, "refs", digest(raw), raw)
        assert r.status_code == 201, r.text
        assert r.headers.get("OCI-Subject") == subj["digest"]
        pushed.append((kind, subj["digest"], digest(raw)))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "subject": present}).encode()
    assert put_manifest(c, "refs", digest(index), index).headers.get("OCI-Subject") == digest(subject)
    for kind, subj_digest, value in pushed:
        r = c.get(f"/v2/refs/referrers/{subj_digest}")
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith(OCI_INDEX)
        listed = {m["digest"]: m for m in r.json()["manifests"]}
        assert listed[value]["artifactType"] == kind
    listed = c.get(f"/v2/refs/referrers/{digest(subject)}").json()["manifests"]
    assert {m["digest"] for m in listed} == {pushed[0][2], digest(index)}
    r = c.get(f"/v2/refs/referrers/{digest(subject)}", params={"artifactType": "application/vnd.example.sig"})
    assert [m["digest"] for m in r.json()["manifests"]] == [pushed[0][2]]
    assert r.headers.get("OCI-Filters-Applied") == "artifactType"
    r = c.get(f"/v2/refs/referrers/{digest(b'nobody refers to this')}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []
