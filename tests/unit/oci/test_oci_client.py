"""RegistryClient against an in-memory registry (httpx.MockTransport): every protocol edge the pull relies on."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelctl import reference
from modelctl.config import Config
from modelctl.errors import AuthError, DigestMismatch, IntegrityError, NotFound, RegistryError
from modelctl.oci import mediatypes as mt
from modelctl.oci.client import BlobReader, RegistryClient, _regroup
from modelctl.oci.credentials import Credentials
from modelctl.oci.descriptor import Index, Manifest

SECRET = "s3cr3t-P@ss"
Handler = Callable[[httpx.Request], httpx.Response]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(config_blob: bytes = b"{}", layers: tuple[bytes, ...] = (b"weights",)) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": sha(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": sha(x), "size": len(x)} for x in layers],
    }
    return json.dumps(doc).encode()


class Registry:
    """A small in-memory OCI registry at ``host``; with ``token`` it demands bearer tokens from auth.test."""

    def __init__(self, host: str = "reg.test", *, token: bool = False) -> None:
        self.host = host
        self.token = token
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.uploads: dict[str, bytearray] = {}
        self.tags_page = 0

    def add_manifest(self, repo: str, tag: str, data: bytes, media_type: str = mt.OCI_MANIFEST) -> str:
        digest = sha(data)
        self.manifests[(repo, tag)] = self.manifests[(repo, digest)] = (data, media_type)
        return digest

    def add_blob(self, data: bytes) -> str:
        self.blobs[sha(data)] = data
        return sha(data)

    def paths(self, method: str | None = None) -> list[str]:
        return [url for m, url, _ in self.log if method is None or m == method]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append((request.method, str(request.url), dict(request.headers)))
        if self.token and request.headers.get("Authorization") != "Bearer good":
            challenge = 'Bearer realm="https://auth.test/token",service="reg.test"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        found = re.fullmatch(r"/v2/(.+)/(manifests|blobs|tags|referrers)/(.*)", path)
        if not found:
            return httpx.Response(404)
        repo, kind, rest = found.groups()
        if kind == "manifests" and request.method == "PUT":
            data = request.read()
            self.add_manifest(repo, rest, data, request.headers["Content-Type"])
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(data)})
        if kind == "manifests":
            if (repo, rest) not in self.manifests:
                return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            data, media_type = self.manifests[(repo, rest)]
            headers = {"Content-Type": media_type, "Docker-Content-Digest": sha(data)}
            if request.method == "HEAD":
                return httpx.Response(200, headers={**headers, "Content-Length": str(len(data))})
            return httpx.Response(200, headers=headers, content=data)
        if kind == "blobs" and rest.startswith("uploads"):
            return self.upload(request, repo, rest)
        if kind == "blobs":
            return self.blob(request, rest)
        if kind == "tags":
            return self.tag_list(request, repo)
        return oci_error(404, "NAME_UNKNOWN", "repository name not known to registry")

    def blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        if digest not in self.blobs:
            return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        data = self.blobs[digest]
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if wanted:
            first = int(wanted[1])
            last = int(wanted[2]) if wanted[2] else len(data) - 1
            if first >= len(data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
            last = min(last, len(data) - 1)
            return streamed(206, data[first : last + 1], {"Content-Range": f"bytes {first}-{last}/{len(data)}"})
        return streamed(200, data)

    def tag_list(self, request: httpx.Request, repo: str) -> httpx.Response:
        tags = sorted({tag for (r, tag) in self.manifests if r == repo and not tag.startswith("sha256:")})
        last = request.url.params.get("last")
        if last:
            tags = [t for t in tags if t > last]
        page, rest = tags[:2], tags[2:]
        headers = {"Link": f'</v2/{repo}/tags/list?n=2&last={page[-1]}>; rel="next"'} if rest else {}
        return httpx.Response(200, headers=headers, json={"name": repo, "tags": page})

    def upload(self, request: httpx.Request, repo: str, rest: str) -> httpx.Response:
        if request.method == "POST":
            mount = request.url.params.get("mount")
            if mount and mount in self.blobs:
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{mount}"})
            session = f"s{len(self.uploads)}"
            self.uploads[session] = bytearray()
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{session}?_state=abc"})
        session = rest.split("/", 1)[1]
        if request.method == "DELETE":
            self.uploads.pop(session, None)
            return httpx.Response(204)
        body = request.read()
        if request.method == "PATCH":
            first, last = map(int, request.headers["Content-Range"].split("-"))
            assert first == len(self.uploads[session]) and last - first + 1 == len(body)
            self.uploads[session] += body
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{session}?_state=def"})
        assert request.method == "PUT"
        self.uploads[session] += body
        data = bytes(self.uploads.pop(session))
        if sha(data) != request.url.params["digest"]:
            return oci_error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self.blobs[sha(data)] = data
        return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{sha(data)}"})


def streamed(status: int, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose body is read from the stream (as from the network), not preloaded."""
    headers = {**(headers or {}), "Content-Length": str(len(data))}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))


def oci_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"errors": [{"code": code, "message": message}]})


class Network:
    """Routes requests by host; unknown hosts refuse the connection. Counts token requests to auth.test."""

    def __init__(self, hosts: dict[str, Handler] | None = None) -> None:
        self.hosts = hosts or {}
        self.token_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests.append(request)
            return httpx.Response(200, json={"token": "good", "expires_in": 300})
        handler = self.hosts.get(request.url.netloc.decode())
        if handler is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return handler(request)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    tmp_path: Path,
    handler: Handler,
    sleeps: Sleeps | None = None,
    *,
    creds: Credentials | None = None,
    **config: Any,
) -> RegistryClient:
    settings: dict[str, Any] = {"home": tmp_path, "docker_config": tmp_path / "docker", "retries": 2, **config}
    return RegistryClient(
        Config(**settings),
        transport=httpx.MockTransport(handler),
        sleep=sleeps if sleeps is not None else Sleeps(),
        credentials=lambda host: creds,
    )


REF = reference.parse("reg.test/ai/x:latest")


# -- endpoints ---------------------------------------------------------------------------------------------


def test_endpoint_for(tmp_path: Path) -> None:
    config = Config(home=tmp_path, insecure_registries=frozenset({"plain.test"}))
    with RegistryClient(config) as client:
        assert client.endpoint_for("docker.io") == "https://registry-1.docker.io"
        assert client.endpoint_for("reg.test") == "https://reg.test"
        assert client.endpoint_for("localhost:5000") == "http://localhost:5000"
        assert client.endpoint_for("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert client.endpoint_for("plain.test") == "http://plain.test"


def test_ping(tmp_path: Path) -> None:
    registry = Registry(token=True)
    with make_client(tmp_path, Network({"reg.test": registry})) as client:
        client.ping("reg.test")
    assert registry.paths() == ["https://reg.test/v2/", "https://reg.test/v2/"]


def test_ping_unreachable(tmp_path: Path) -> None:
    with make_client(tmp_path, Network()) as client, pytest.raises(RegistryError) as caught:
        client.ping("reg.test")
    assert caught.value.temporary and "registry reg.test unreachable" in str(caught.value)


# -- manifests ---------------------------------------------------------------------------------------------


def test_get_manifest(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_manifest("ai/x", "latest", manifest_bytes())
    with make_client(tmp_path, registry) as client:
        doc, media_type = client.get_manifest(REF)
    assert isinstance(doc, Manifest) and doc.digest == digest
    assert media_type == mt.OCI_MANIFEST
    _method, url, headers = registry.log[0]
    assert url == "https://reg.test/v2/ai/x/manifests/latest"
    assert set(headers["accept"].split(", ")) == set(mt.MANIFEST_ACCEPT)
    assert headers["user-agent"].startswith("modelctl/")


def test_get_manifest_by_digest(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_manifest("ai/x", "latest", manifest_bytes())
    with make_client(tmp_path, registry) as client:
        doc, _ = client.get_manifest(REF.with_digest(digest))
    assert doc.digest == digest
    assert registry.paths() == [f"https://reg.test/v2/ai/x/manifests/{digest}"]


def test_get_manifest_by_sha512_digest_is_verified_with_sha512(tmp_path: Path) -> None:
    registry = Registry()
    data = manifest_bytes()
    registry.add_manifest("ai/x", "latest", data)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    registry.manifests[("ai/x", digest)] = (data, mt.OCI_MANIFEST)
    with make_client(tmp_path, registry) as client:
        doc, _ = client.get_manifest(REF.with_digest(digest))
        assert doc.digest == digest
        registry.manifests[("ai/x", digest)] = (data + b" ", mt.OCI_MANIFEST)
        with pytest.raises(DigestMismatch):
            client.get_manifest(REF.with_digest(digest))
    assert registry.paths()[0] == f"https://reg.test/v2/ai/x/manifests/{digest}"


def test_get_index(tmp_path: Path) -> None:
    registry = Registry()
    child = manifest_bytes()
    index = json.dumps(
        {"schemaVersion": 2, "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": sha(child), "size": len(child)}]}
    ).encode()
    registry.add_manifest("ai/x", "latest", index, mt.OCI_INDEX)
    with make_client(tmp_path, registry) as client:
        doc, media_type = client.get_manifest(REF)
    assert isinstance(doc, Index) and media_type == mt.OCI_INDEX


def test_manifest_digest_mismatch_by_reference(tmp_path: Path, sleeps: Sleeps) -> None:
    registry = Registry()
    wrong = sha(b"something else")
    registry.manifests[("ai/x", wrong)] = (manifest_bytes(), mt.OCI_MANIFEST)
    with make_client(tmp_path, registry, sleeps) as client, pytest.raises(DigestMismatch) as caught:
        client.get_manifest(REF.with_digest(wrong))
    assert caught.value.expected == wrong and caught.value.exit_code == 5
    assert len(registry.log) == 1 and sleeps == []


def test_manifest_docker_content_digest_mismatch(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": sha(b"other")}
        return httpx.Response(200, headers=headers, content=manifest_bytes())

    with make_client(tmp_path, handler) as client, pytest.raises(DigestMismatch, match="Docker-Content-Digest"):
        client.get_manifest(REF)


def test_oversize_manifest_is_refused_whatever_content_length_says(tmp_path: Path) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * (1 << 20)
        raise AssertionError("read past the limit")

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": mt.OCI_MANIFEST, "Content-Length": "100"}
        return httpx.Response(200, headers=headers, content=body())

    with make_client(tmp_path, handler) as client, pytest.raises(IntegrityError, match="limit"):
        client.get_manifest(REF)


def test_text_plain_manifest_is_tolerated(tmp_path: Path) -> None:
    data = json.loads(manifest_bytes())
    data["mediaType"] = mt.DOCKER_MANIFEST
    raw = json.dumps(data).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=raw)

    with make_client(tmp_path, handler) as client:
        doc, media_type = client.get_manifest(reference.parse("ollama://smollm2"))
    assert isinstance(doc, Manifest) and media_type == mt.DOCKER_MANIFEST


def test_manifest_not_found_names_reference(tmp_path: Path, sleeps: Sleeps) -> None:
    with make_client(tmp_path, Registry(), sleeps) as client, pytest.raises(NotFound) as caught:
        client.get_manifest(REF)
    assert "reg.test/ai/x:latest" in str(caught.value) and "MANIFEST_UNKNOWN" in str(caught.value)
    assert "check the name" in str(caught.value)
    assert sleeps == []


def test_head_manifest(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_manifest("ai/x", "latest", manifest_bytes())
    with make_client(tmp_path, registry) as client:
        found = client.head_manifest(REF)
        assert found is not None and found.digest == digest and found.size == len(manifest_bytes())
        assert found.media_type == mt.OCI_MANIFEST
        assert client.head_manifest(REF.with_tag("missing")) is None
    assert registry.paths("GET") == []


def test_head_manifest_without_digest_header_falls_back_to_get(tmp_path: Path) -> None:
    raw = manifest_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": mt.OCI_MANIFEST}, content=raw)

    with make_client(tmp_path, handler) as client:
        found = client.head_manifest(REF)
    assert found is not None and found.digest == sha(raw) and found.size == len(raw)


# -- blobs -------------------------------------------------------------------------------------------------


def test_get_blob(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(b'{"config": {}}')
    with make_client(tmp_path, registry) as client:
        assert client.get_blob(REF, digest) == b'{"config": {}}'


def test_get_blob_digest_mismatch(tmp_path: Path) -> None:
    registry = Registry()
    digest = sha(b"expected")
    registry.blobs[digest] = b"tampered"
    with make_client(tmp_path, registry) as client, pytest.raises(DigestMismatch):
        client.get_blob(REF, digest)


def test_get_blob_size_limit(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(b"x" * 2000)
    with make_client(tmp_path, registry) as client, pytest.raises(IntegrityError, match="limit"):
        client.get_blob(REF, digest, max_size=1000)


def test_malformed_digest_never_reaches_a_url(tmp_path: Path) -> None:
    registry = Registry()
    with make_client(tmp_path, registry) as client, pytest.raises(IntegrityError):
        client.get_blob(REF, "sha256:../../etc")
    assert registry.log == []


def test_blob_size(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(b"x" * 1234)
    with make_client(tmp_path, registry) as client:
        assert client.blob_size(REF, digest) == 1234
    assert registry.paths("HEAD")


def test_blob_size_falls_back_to_ranged_get(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(b"x" * 1234)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(403)  # e.g. a CDN URL signed for GET only
        return registry(request)

    with make_client(tmp_path, handler) as client:
        assert client.blob_size(REF, digest) == 1234
    assert registry.log[-1][2]["range"] == "bytes=0-0"


def test_blob_size_not_found(tmp_path: Path) -> None:
    with make_client(tmp_path, Registry()) as client, pytest.raises(NotFound, match=r"not found on reg\.test"):
        client.blob_size(REF, sha(b"nope"))


DATA = bytes(range(256)) * 40


def test_open_blob_whole(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(DATA)
    with make_client(tmp_path, registry) as client, client.open_blob(REF, digest) as blob:
        assert isinstance(blob, BlobReader)
        assert (blob.status, blob.offset, blob.total) == (200, 0, len(DATA))
        assert b"".join(blob.iter_chunks()) == DATA
    assert "range" not in registry.log[0][2]


def test_open_blob_chunks_are_bounded(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(DATA)
    with make_client(tmp_path, registry) as client, client.open_blob(REF, digest) as blob:
        chunks = list(blob.iter_chunks(1000))
    assert b"".join(chunks) == DATA and max(map(len, chunks)) <= 1000


@pytest.mark.parametrize(("start", "end", "header"), [(100, 199, "bytes=100-199"), (100, None, "bytes=100-")])
def test_open_blob_range(tmp_path: Path, start: int, end: int | None, header: str) -> None:
    registry = Registry()
    digest = registry.add_blob(DATA)
    with make_client(tmp_path, registry) as client, client.open_blob(REF, digest, start=start, end=end) as blob:
        assert (blob.status, blob.offset, blob.total) == (206, start, len(DATA))
        expected = DATA[start : (end + 1 if end is not None else None)]
        assert blob.length == len(expected)
        assert b"".join(blob.iter_chunks()) == expected
    assert registry.log[0][2]["range"] == header


def test_open_blob_range_answered_with_200(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DATA)

    with make_client(tmp_path, handler) as client, client.open_blob(REF, sha(DATA), start=500) as blob:
        assert (blob.status, blob.offset, blob.total) == (200, 0, len(DATA))


@pytest.mark.parametrize("content_range", ["bytes 0-99/10240", "bytes 101-199/10240", "", "bytes 100-300/10240"])
def test_open_blob_wrong_content_range_is_temporary_and_not_retried(
    tmp_path: Path, sleeps: Sleeps, content_range: str
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(206, headers={"Content-Range": content_range}, content=b"x" * 100)

    with (
        make_client(tmp_path, handler, sleeps) as client,
        pytest.raises(RegistryError) as caught,
        client.open_blob(REF, sha(DATA), start=100, end=199),
    ):
        pass
    assert caught.value.temporary
    assert len(calls) == 1 and sleeps == []


def test_open_blob_416_is_an_integrity_error(tmp_path: Path) -> None:
    """A 416 for bytes the caller was told exist: the registry's copy is shorter (exit 5), no retry helps."""
    registry = Registry()
    digest = registry.add_blob(DATA)
    with (
        make_client(tmp_path, registry) as client,
        pytest.raises(IntegrityError) as caught,
        client.open_blob(REF, digest, start=len(DATA)),
    ):
        pass
    assert caught.value.exit_code == 5
    assert f"only {len(DATA)} bytes" in caught.value.message and "damaged" in str(caught.value.hint)


def test_open_blob_5xx_not_retried(tmp_path: Path, sleeps: Sleeps) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": "7"})

    with (
        make_client(tmp_path, handler, sleeps) as client,
        pytest.raises(RegistryError) as caught,
        client.open_blob(REF, sha(DATA)),
    ):
        pass
    assert caught.value.temporary and caught.value.retry_after == 7.0
    assert len(calls) == 1 and sleeps == []


class Broken(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"abc"
        raise httpx.ReadError("connection reset by peer")


def test_open_blob_error_mid_stream_is_typed(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "10"}, stream=Broken())

    got: list[bytes] = []
    with (
        make_client(tmp_path, handler) as client,
        pytest.raises(RegistryError) as caught,
        client.open_blob(REF, sha(DATA)) as blob,
    ):
        got.extend(blob.iter_chunks())
    assert got == [b"abc"] and caught.value.temporary and "unreachable" in str(caught.value)


def test_open_blob_from_many_threads_shares_one_token(tmp_path: Path) -> None:
    registry = Registry(token=True)
    digest = registry.add_blob(DATA)
    registry.add_manifest("ai/x", "latest", manifest_bytes())
    network = Network({"reg.test": registry})
    errors: list[BaseException] = []
    with make_client(tmp_path, network) as client:
        client.get_manifest(REF)

        def part(i: int) -> None:
            try:
                with client.open_blob(REF, digest, start=i * 640, end=i * 640 + 639) as blob:
                    assert b"".join(blob.iter_chunks()) == DATA[i * 640 : i * 640 + 640]
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=part, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(network.token_requests) == 1
    assert sum(1 for _, _, h in registry.log if "authorization" not in h) == 1


# -- redirects ---------------------------------------------------------------------------------------------


def test_redirect_to_cdn_keeps_range_and_drops_authorization(tmp_path: Path) -> None:
    registry = Registry(token=True)
    seen: list[dict[str, str]] = []

    def blob_redirect(request: httpx.Request) -> httpx.Response:
        if "/blobs/" in request.url.path and request.headers.get("Authorization") == "Bearer good":
            registry.log.append((request.method, str(request.url), dict(request.headers)))
            return httpx.Response(307, headers={"Location": "https://cdn.test/signed/blob?sig=1"})
        return registry(request)

    def cdn(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers))
        return httpx.Response(206, headers={"Content-Range": "bytes 10-19/10240"}, content=DATA[10:20])

    with (
        make_client(tmp_path, Network({"reg.test": blob_redirect, "cdn.test": cdn})) as client,
        client.open_blob(REF, sha(DATA), start=10, end=19) as blob,
    ):
        assert b"".join(blob.iter_chunks()) == DATA[10:20] and blob.offset == 10
    [headers] = seen
    assert headers["range"] == "bytes=10-19"
    assert "authorization" not in headers
    assert headers["host"] == "cdn.test"


def test_same_host_redirect_keeps_authorization(tmp_path: Path) -> None:
    registry = Registry(token=True)
    digest = registry.add_blob(DATA)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(digest) and request.headers.get("Authorization") == "Bearer good":
            registry.log.append((request.method, str(request.url), dict(request.headers)))
            return httpx.Response(307, headers={"Location": f"/v2/ai/x/blobs/{digest}/"})
        if request.url.path.endswith("/"):
            request = httpx.Request(request.method, str(request.url).rstrip("/"), headers=request.headers)
        return registry(request)

    with (
        make_client(tmp_path, Network({"reg.test": handler})) as client,
        client.open_blob(REF, digest, start=5) as blob,
    ):
        assert b"".join(blob.iter_chunks()) == DATA[5:]
    _method, _url, headers = registry.log[-1]
    assert headers["authorization"] == "Bearer good" and headers["range"] == "bytes=5-"


@pytest.mark.parametrize(
    ("insecure", "target"),
    [(False, "http://reg.test:5001"), (True, "https://reg.test")],
    ids=["another-port", "http-to-https"],
)
def test_redirect_to_another_origin_of_the_same_host_drops_authorization(
    tmp_path: Path, insecure: bool, target: str
) -> None:
    """A credential belongs to an origin (scheme, host, port), not a host name: another port may be another
    service, and the same host over another scheme is another origin too."""
    registry = Registry(token=True)
    digest = registry.add_blob(DATA)
    to = httpx.URL(target)
    seen: list[dict[str, str]] = []

    def route(request: httpx.Request) -> httpx.Response:
        if (request.url.scheme, request.url.port) == (to.scheme, to.port):
            seen.append(dict(request.headers))
            return httpx.Response(200, content=DATA)
        if "/blobs/" in request.url.path and request.headers.get("Authorization") == "Bearer good":
            return httpx.Response(307, headers={"Location": f"{target}/signed/blob"})
        return registry(request)

    network = Network({"reg.test": route, to.netloc.decode(): route})
    config = {"insecure_registries": frozenset({"reg.test"})} if insecure else {}
    with make_client(tmp_path, network, **config) as client, client.open_blob(REF, digest) as blob:
        assert b"".join(blob.iter_chunks()) == DATA
    [headers] = seen
    assert "authorization" not in headers


def test_redirect_loop_is_an_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/v2/ai/x/blobs/again"})

    with make_client(tmp_path, handler) as client, pytest.raises(RegistryError, match="redirected more than 5"):
        client.blob_size(REF, sha(DATA))


# -- mirrors -----------------------------------------------------------------------------------------------

HUB_REF = reference.parse("ai/x:latest")
MIRROR = {"docker.io": ("http://mirror.test",)}


def hub_setup() -> tuple[Registry, Registry]:
    upstream, mirror = Registry("registry-1.docker.io"), Registry("mirror.test")
    for registry in (upstream, mirror):
        registry.add_manifest("ai/x", "latest", manifest_bytes())
        registry.add_blob(DATA)
    return upstream, mirror


def test_mirror_is_tried_first_and_sticks(tmp_path: Path) -> None:
    upstream, mirror = hub_setup()
    network = Network({"registry-1.docker.io": upstream, "mirror.test": mirror})
    with make_client(tmp_path, network, mirrors=MIRROR) as client:
        client.get_manifest(HUB_REF)
        with client.open_blob(HUB_REF, sha(DATA)) as blob:
            assert b"".join(blob.iter_chunks()) == DATA
    assert upstream.log == []
    assert mirror.paths()[0] == "http://mirror.test/v2/ai/x/manifests/latest"


@pytest.mark.parametrize("failure", [500, 404, 401, "refused"])
def test_mirror_failure_falls_back_to_upstream_and_blobs_follow(tmp_path: Path, failure: int | str) -> None:
    upstream, _mirror = hub_setup()
    mirror_calls: list[str] = []

    def broken_mirror(request: httpx.Request) -> httpx.Response:
        mirror_calls.append(request.url.path)
        if failure == "refused":
            raise httpx.ConnectError("refused", request=request)
        assert isinstance(failure, int)
        return httpx.Response(failure)

    network = Network({"registry-1.docker.io": upstream, "mirror.test": broken_mirror})
    with make_client(tmp_path, network, mirrors=MIRROR) as client:
        _doc, _ = client.get_manifest(HUB_REF)
        assert mirror_calls == ["/v2/ai/x/manifests/latest"]
        with client.open_blob(HUB_REF, sha(DATA)) as blob:
            assert b"".join(blob.iter_chunks()) == DATA
        assert client.get_blob(HUB_REF, sha(DATA)) == DATA
    assert mirror_calls == ["/v2/ai/x/manifests/latest"]  # sticky: blobs went upstream first
    assert upstream.paths()[0] == "https://registry-1.docker.io/v2/ai/x/manifests/latest"


def test_blob_missing_on_sticky_mirror_falls_back(tmp_path: Path) -> None:
    upstream, mirror = hub_setup()
    mirror.blobs.clear()
    network = Network({"registry-1.docker.io": upstream, "mirror.test": mirror})
    with make_client(tmp_path, network, mirrors=MIRROR) as client:
        client.get_manifest(HUB_REF)
        with client.open_blob(HUB_REF, sha(DATA), start=1) as blob:
            assert b"".join(blob.iter_chunks()) == DATA[1:]


def test_not_found_beats_unreachable(tmp_path: Path, sleeps: Sleeps) -> None:
    upstream = Registry("registry-1.docker.io")
    network = Network({"registry-1.docker.io": upstream})  # the mirror refuses connections
    with make_client(tmp_path, network, sleeps, mirrors=MIRROR) as client, pytest.raises(NotFound):
        client.get_manifest(HUB_REF)
    assert sleeps == []  # a definite answer is not retried


def test_auth_error_from_mirror_beats_unreachable_upstream(tmp_path: Path, sleeps: Sleeps) -> None:
    network = Network({"mirror.test": lambda r: httpx.Response(403)})
    with make_client(tmp_path, network, sleeps, mirrors=MIRROR) as client, pytest.raises(AuthError) as caught:
        client.get_manifest(HUB_REF)
    assert "modelctl login mirror.test" in str(caught.value)


def test_all_unreachable_retries_then_raises(tmp_path: Path, sleeps: Sleeps) -> None:
    with make_client(tmp_path, Network(), sleeps, mirrors=MIRROR) as client, pytest.raises(RegistryError) as caught:
        client.get_manifest(HUB_REF)
    assert caught.value.temporary and "unreachable" in str(caught.value)
    assert len(sleeps) == 2


def test_push_ignores_mirrors(tmp_path: Path) -> None:
    upstream, mirror = hub_setup()
    network = Network({"registry-1.docker.io": upstream, "mirror.test": mirror})
    with make_client(tmp_path, network, mirrors=MIRROR) as client:
        assert client.blob_exists(HUB_REF, sha(DATA))
    assert mirror.log == []


# -- errors and retries ------------------------------------------------------------------------------------


def flaky(responses: list[httpx.Response], then: Handler) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return responses.pop(0) if responses else then(request)

    return handler


def test_retry_after_seconds_honoured(tmp_path: Path, sleeps: Sleeps) -> None:
    registry = Registry()
    registry.add_manifest("ai/x", "latest", manifest_bytes())
    handler = flaky([oci_error(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": "3"})], registry)
    with make_client(tmp_path, handler, sleeps) as client:
        client.get_manifest(REF)
    assert sleeps == [3.0]


def test_retry_after_http_date_and_cap(tmp_path: Path, sleeps: Sleeps) -> None:
    registry = Registry()
    registry.add_manifest("ai/x", "latest", manifest_bytes())
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    handler = flaky(
        [
            httpx.Response(503, headers={"Retry-After": later}),
            httpx.Response(503, headers={"Retry-After": "3600"}),
        ],
        registry,
    )
    with make_client(tmp_path, handler, sleeps) as client:
        client.get_manifest(REF)
    assert 3.0 <= sleeps[0] <= 5.0 and sleeps[1] == 10.0


def test_backoff_without_retry_after(tmp_path: Path, sleeps: Sleeps) -> None:
    handler = flaky([httpx.Response(500)] * 5, Registry())
    with make_client(tmp_path, handler, sleeps, retries=4) as client, pytest.raises(RegistryError) as caught:
        client.tags(REF)
    assert caught.value.status == 500 and caught.value.temporary
    assert len(sleeps) == 4
    assert all(0.25 * 2**i <= s <= min(10.0, 0.5 * 2**i) for i, s in enumerate(sleeps))


def test_client_errors_are_not_retried(tmp_path: Path, sleeps: Sleeps) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return oci_error(400, "MANIFEST_INVALID", "manifest invalid")

    with make_client(tmp_path, handler, sleeps) as client, pytest.raises(RegistryError) as caught:
        client.get_manifest(REF)
    assert not caught.value.temporary and caught.value.code == "MANIFEST_INVALID"
    assert "MANIFEST_INVALID: manifest invalid" in str(caught.value)
    assert len(calls) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(404, "NAME_UNKNOWN", NotFound), (400, "BLOB_UNKNOWN", NotFound), (403, "DENIED", AuthError)],
)
def test_error_codes_map_to_types(tmp_path: Path, status: int, code: str, error: type[Exception]) -> None:
    with make_client(tmp_path, lambda r: oci_error(status, code, "x")) as client, pytest.raises(error):
        client.get_blob(REF, sha(b"x"))


def test_auth_error_never_shows_secret(tmp_path: Path) -> None:
    def token_denied(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(401, json={"details": "incorrect username or password"})
        return Registry(token=True)(request)

    creds = Credentials("alice", SECRET)
    with make_client(tmp_path, token_denied, creds=creds) as client, pytest.raises(AuthError) as caught:
        client.get_manifest(REF)
    text = f"{caught.value} {caught.value!r} {caught.value.hint} {caught.value.__cause__} {caught.value.__context__}"
    assert SECRET not in text and "modelctl login reg.test" in text


def test_unauthorized_after_token_is_auth_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, json={"token": "useless"})
        challenge = 'Bearer realm="https://auth.test/token",service="reg.test",error="insufficient_scope"'
        return oci_error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})

    with make_client(tmp_path, handler) as client, pytest.raises(AuthError) as caught:
        client.get_manifest(REF)
    assert "modelctl login reg.test" in str(caught.value) and caught.value.exit_code == 4


# -- tags and referrers ------------------------------------------------------------------------------------


def test_tags_follow_link_pagination(tmp_path: Path) -> None:
    registry = Registry()
    for tag in ["a", "b", "c", "d", "e"]:
        registry.add_manifest("ai/x", tag, manifest_bytes())
    with make_client(tmp_path, registry) as client:
        assert client.tags(REF) == ["a", "b", "c", "d", "e"]
    assert len(registry.log) == 3


def test_tags_link_loop_stops(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        link = '</v2/ai/x/tags/list?last=a>; rel="next"'
        return httpx.Response(200, headers={"Link": link}, json={"name": "ai/x", "tags": ["a"]})

    with make_client(tmp_path, handler) as client:
        assert client.tags(REF) == ["a", "a"]


def test_tags_null_list(tmp_path: Path) -> None:
    with make_client(tmp_path, lambda r: httpx.Response(200, json={"name": "ai/x", "tags": None})) as client:
        assert client.tags(REF) == []


CARD = "application/vnd.modelctl.card.v1"


def referrer_index(*artifact_types: str) -> dict[str, Any]:
    entries = [
        {"mediaType": mt.OCI_MANIFEST, "digest": sha(t.encode()), "size": 10, "artifactType": t} for t in artifact_types
    ]
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}


def test_referrers(tmp_path: Path) -> None:
    subject = sha(b"subject")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        doc = referrer_index(CARD, "application/other")  # this registry does not filter
        return httpx.Response(200, headers={"Content-Type": mt.OCI_INDEX}, json=doc)

    with make_client(tmp_path, handler) as client:
        assert len(client.referrers(REF, subject)) == 2
        [card] = client.referrers(REF, subject, CARD)
    assert card.artifact_type == CARD
    assert seen[0].url.path == f"/v2/ai/x/referrers/{subject}"
    assert seen[1].url.params["artifactType"] == CARD


def test_referrers_fall_back_to_tag_schema(tmp_path: Path) -> None:
    registry = Registry()
    subject = sha(b"subject")
    registry.add_manifest("ai/x", subject.replace(":", "-"), json.dumps(referrer_index(CARD)).encode(), mt.OCI_INDEX)
    with make_client(tmp_path, registry) as client:
        [card] = client.referrers(REF, subject)
        assert card.artifact_type == CARD
        assert client.referrers(REF, sha(b"no referrers")) == []


# -- push primitives ---------------------------------------------------------------------------------------


def test_blob_exists(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(DATA)
    with make_client(tmp_path, registry) as client:
        assert client.blob_exists(REF, digest) is True
        assert client.blob_exists(REF, sha(b"absent")) is False


def test_mount_blob(tmp_path: Path) -> None:
    registry = Registry()
    digest = registry.add_blob(DATA)
    with make_client(tmp_path, registry) as client:
        assert client.mount_blob(REF, digest, "ai/src") is True
        assert client.mount_blob(REF, sha(b"absent"), "ai/src") is False
    assert registry.uploads == {}  # the session opened instead of a mount was cancelled
    assert "mount=" in registry.paths("POST")[0] and "from=ai%2Fsrc" in registry.paths("POST")[0]


def test_upload_monolithic(tmp_path: Path) -> None:
    registry = Registry()
    with make_client(tmp_path, registry) as client:
        client.upload_blob(REF, sha(DATA), len(DATA), iter([DATA[:100], DATA[100:]]))
    assert registry.blobs[sha(DATA)] == DATA
    method, url, headers = registry.log[-1]
    assert method == "PUT" and "_state=abc" in url and f"digest={sha(DATA).replace(':', '%3A')}" in url
    assert headers["content-length"] == str(len(DATA))


def test_upload_chunked_from_file(tmp_path: Path) -> None:
    registry = Registry()
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    with make_client(tmp_path, registry) as client:
        client.upload_blob(REF, sha(DATA), len(DATA), path, chunk_size=4096)
    assert registry.blobs[sha(DATA)] == DATA
    assert [m for m, _, _ in registry.log] == ["POST", "PATCH", "PATCH", "PATCH", "PUT"]
    assert [h.get("content-range") for m, _, h in registry.log if m == "PATCH"] == [
        "0-4095",
        "4096-8191",
        "8192-10239",
    ]


def test_upload_with_wrong_digest_is_refused_before_commit(tmp_path: Path) -> None:
    registry = Registry()
    with make_client(tmp_path, registry) as client, pytest.raises(DigestMismatch):
        client.upload_blob(REF, sha(b"other"), len(DATA), DATA, chunk_size=4096)
    assert "PUT" not in [m for m, _, _ in registry.log]


def test_upload_monolithic_wrong_digest(tmp_path: Path) -> None:
    with make_client(tmp_path, Registry()) as client, pytest.raises(DigestMismatch):
        client.upload_blob(REF, sha(b"other"), len(DATA), DATA)


def test_push_uses_push_scope(tmp_path: Path) -> None:
    registry = Registry(token=True)
    network = Network({"reg.test": registry})
    with make_client(tmp_path, network) as client:
        client.upload_blob(REF, sha(DATA), len(DATA), [DATA])
    assert network.token_requests[0].url.params.get_list("scope") == ["repository:ai/x:pull,push"]
    assert registry.blobs[sha(DATA)] == DATA


def test_put_manifest(tmp_path: Path) -> None:
    registry = Registry()
    raw = manifest_bytes()
    with make_client(tmp_path, registry) as client:
        assert client.put_manifest(REF, raw, mt.OCI_MANIFEST) == sha(raw)
        doc, media_type = client.get_manifest(REF)
    assert doc.raw == raw and media_type == mt.OCI_MANIFEST
    assert registry.log[0][2]["content-type"] == mt.OCI_MANIFEST


def test_put_manifest_checks_pinned_digest(tmp_path: Path) -> None:
    registry = Registry()
    with make_client(tmp_path, registry) as client, pytest.raises(DigestMismatch):
        client.put_manifest(REF.with_digest(sha(b"other")), manifest_bytes(), mt.OCI_MANIFEST)
    assert registry.log == []


def test_unreachable_token_service_is_named(tmp_path: Path, sleeps: Sleeps) -> None:
    registry = Registry(token=True)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return registry(request)

    with make_client(tmp_path, handler, sleeps) as client, pytest.raises(RegistryError) as caught:
        client.get_manifest(REF)
    assert "auth.test unreachable" in str(caught.value) and caught.value.temporary
    assert len(sleeps) == 2


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_regroup_cuts_exact_groups_without_joining(size: int) -> None:
    """Chunked uploads send each group as a list of pieces (re-iterable for an auth retry, no 64 MiB joins)."""
    pieces = [bytes([i]) * n for i, n in enumerate([5, 64, 1, 300, 0, 129, 64])]
    groups = list(_regroup(iter(pieces), size))
    assert all(isinstance(g, list) for g in groups)
    lengths = [sum(map(len, g)) for g in groups]
    assert all(n == size for n in lengths[:-1]) and 0 < lengths[-1] <= size
    assert b"".join(b"".join(g) for g in groups) == b"".join(pieces)
