"""modelctl's RegistryClient against real docker-registry processes (distribution 2.8.2): anonymous, htpasswd
and token auth, ranged reads, tags pagination, referrers, uploads, and mirrors. Artifacts are pushed with
skopeo from an independent OCI layout writer; what the client uploads is read back with skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from helpers.faults import FaultProxy
from helpers.ggufs import big_blob
from helpers.oci_layout import (
    DOCKER_GGUF,
    OCI_INDEX,
    OCI_MANIFEST,
    OCILayout,
    digest_of,
    docker_v01_artifact,
    inspect_raw,
    push_layout,
)
from helpers.servers import RegistryServer
from helpers.token_server import TokenServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelctl import reference
from modelctl.config import from_env
from modelctl.errors import AuthError, NotFound
from modelctl.oci.client import RegistryClient
from modelctl.oci.descriptor import Manifest


def client() -> RegistryClient:
    """A client configured the way the CLI configures it: from the (test-isolated) environment."""
    return RegistryClient(from_env())


def write_docker_auth(host: str, username: str, password: str) -> None:
    """``$DOCKER_CONFIG/config.json`` with one ``auths`` entry, as ``docker login`` writes it."""
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    config.write_text(json.dumps({"auths": {host: {"auth": token}}}))


def push_tiny(layout: OCILayout, gguf: Path, registry: RegistryServer, repo_and_tag: str) -> str:
    docker_v01_artifact(layout, "m", [gguf], license=b"Apache-2.0\n", context_size=2048)
    return push_layout(layout, "m", registry, repo_and_tag).digest


def layer_digest(layout: OCILayout) -> str:
    return str(json.loads(layout.manifest_bytes("m"))["layers"][0]["digest"])


def config_digest(layout: OCILayout) -> str:
    return str(json.loads(layout.manifest_bytes("m"))["config"]["digest"])


def read_all(
    c: RegistryClient, ref: reference.Reference, digest: str, start: int = 0, end: int | None = None
) -> bytes:
    with c.open_blob(ref, digest, start=start, end=end) as reader:
        return b"".join(reader.iter_chunks())


# -- anonymous ---------------------------------------------------------------------------------------------


def test_anonymous_pull_reads_what_skopeo_pushed(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    digest = push_tiny(layout, tiny_gguf, docker_registry, "ai/tiny:1")
    ref = reference.parse(f"{docker_registry.host}/ai/tiny:1")
    data = tiny_gguf.read_bytes()
    with client() as c:
        c.ping(docker_registry.host)
        doc, content_type = c.get_manifest(ref)
        assert isinstance(doc, Manifest)
        assert content_type == OCI_MANIFEST
        assert doc.raw == layout.manifest_bytes("m") and doc.digest == digest
        assert [layer.media_type for layer in doc.layers] == [
            DOCKER_GGUF,
            "application/vnd.docker.ai.license",
        ]

        head = c.head_manifest(ref)
        assert head is not None
        assert (head.digest, head.size, head.media_type) == (digest, len(doc.raw), OCI_MANIFEST)
        pinned, _ = c.get_manifest(ref.with_digest(digest))
        assert pinned.raw == doc.raw

        assert c.get_blob(ref, config_digest(layout)) == layout.blob(config_digest(layout))
        assert c.get_blob(ref, doc.layers[1].digest) == b"Apache-2.0\n"
        assert c.blob_size(ref, layer_digest(layout)) == len(data)
        with c.open_blob(ref, layer_digest(layout)) as reader:
            assert (reader.status, reader.offset, reader.total) == (200, 0, len(data))
            assert b"".join(reader.iter_chunks()) == data
        assert c.blob_exists(ref, layer_digest(layout))
        assert not c.blob_exists(ref, digest_of(b"never pushed"))


def test_absent_things_are_not_found(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    push_tiny(layout, tiny_gguf, docker_registry, "ai/tiny:1")
    host = docker_registry.host
    absent = digest_of(b"absent")
    with client() as c:
        for text in (f"{host}/ai/tiny:2", f"{host}/ai/nothing:1", f"{host}/ai/tiny@{absent}"):
            with pytest.raises(NotFound):
                c.get_manifest(reference.parse(text))
            assert c.head_manifest(reference.parse(text)) is None
        ref = reference.parse(f"{host}/ai/tiny:1")
        with pytest.raises(NotFound):
            c.get_blob(ref, absent)
        with pytest.raises(NotFound), c.open_blob(ref, absent):
            pass


# -- ranged reads ------------------------------------------------------------------------------------------

SIZE = (1 << 20) + 12345
RANGES = [
    (0, 0),
    (0, 99),
    (1, 1),
    (4096, 8191),
    (12345, 23456),
    (SIZE - 1, None),
    (SIZE - 1, SIZE - 1),
    (1000, None),
    (0, SIZE - 1),
    (0, SIZE + 100),
]


@pytest.fixture()
def ranged(
    docker_registry: RegistryServer, layout: OCILayout, tmp_path: Path
) -> tuple[reference.Reference, str, bytes]:
    """A 1 MiB+ blob on the registry: (reference, digest, content)."""
    blob = tmp_path / "blob.gguf"
    digest = big_blob(blob, SIZE)
    docker_v01_artifact(layout, "m", [blob], digests={blob: digest})
    push_layout(layout, "m", docker_registry, "ai/ranges:1")
    return reference.parse(f"{docker_registry.host}/ai/ranges:1"), digest, blob.read_bytes()


def test_ranged_reads_return_exactly_the_bytes_asked(ranged: tuple[reference.Reference, str, bytes]) -> None:
    ref, digest, data = ranged
    with client() as c:
        for start, end in RANGES:
            with c.open_blob(ref, digest, start=start, end=end) as reader:
                body = b"".join(reader.iter_chunks())
                assert reader.status == 206, (start, end)
                assert (reader.offset, reader.total) == (start, SIZE), (start, end)
            stop = SIZE if end is None else min(end + 1, SIZE)
            assert body == data[start:stop], (start, end)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, SIZE - 1), length=st.integers(1, 3 << 20))
def test_any_range_is_exact(ranged: tuple[reference.Reference, str, bytes], start: int, length: int) -> None:
    ref, digest, data = ranged
    with client() as c:
        assert read_all(c, ref, digest, start, start + length - 1) == data[start : start + length]


# -- htpasswd ----------------------------------------------------------------------------------------------


def test_htpasswd_credentials_come_from_docker_config(
    docker_registry_htpasswd: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    server = docker_registry_htpasswd
    digest = push_tiny(layout, tiny_gguf, server, "ai/private:1")
    ref = reference.parse(f"{server.host}/ai/private:1")
    with client() as c, pytest.raises(AuthError):
        c.get_manifest(ref)  # no credentials at all

    assert server.username and server.password
    write_docker_auth(server.host, server.username, server.password)
    with client() as c:
        c.ping(server.host)
        doc, _ = c.get_manifest(ref)
        assert doc.digest == digest
        assert read_all(c, ref, layer_digest(layout)) == tiny_gguf.read_bytes()


def test_htpasswd_wrong_password_is_an_auth_error(
    docker_registry_htpasswd: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    server = docker_registry_htpasswd
    push_tiny(layout, tiny_gguf, server, "ai/private:1")
    assert server.username
    write_docker_auth(server.host, server.username, "not-the-password")
    ref = reference.parse(f"{server.host}/ai/private:1")
    with client() as c:
        with pytest.raises(AuthError) as ping_error:
            c.ping(server.host)
        with pytest.raises(AuthError) as manifest_error:
            c.get_manifest(ref)
    for error in (ping_error.value, manifest_error.value):
        assert "not-the-password" not in str(error)


# -- token auth --------------------------------------------------------------------------------------------


def test_token_auth_fetches_one_token_for_many_calls(
    docker_registry_token: RegistryServer, token_server: TokenServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    server = docker_registry_token
    digest = push_tiny(layout, tiny_gguf, server, "ai/tok:1")
    assert server.username and server.password
    write_docker_auth(server.host, server.username, server.password)
    ref = reference.parse(f"{server.host}/ai/tok:1")
    scope = "repository:ai/tok:pull"
    before = token_server.count(scope)
    with client() as c:
        for _ in range(3):
            doc, _ = c.get_manifest(ref)
            assert doc.digest == digest
        assert c.head_manifest(ref) is not None
        assert c.get_blob(ref, config_digest(layout)) == layout.blob(config_digest(layout))
        assert c.blob_size(ref, layer_digest(layout)) == tiny_gguf.stat().st_size
        for start in (0, 100, 1000):
            assert read_all(c, ref, layer_digest(layout), start) == tiny_gguf.read_bytes()[start:]
    assert token_server.count(scope) - before == 1, token_server.requests
    assert token_server.requests[-1].account == server.username, (
        "the token was asked with the user's credentials"
    )


def test_token_auth_anonymous_pull_and_wrong_password(
    docker_registry_token: RegistryServer, token_server: TokenServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    server = docker_registry_token
    digest = push_tiny(layout, tiny_gguf, server, "ai/tok:1")
    ref = reference.parse(f"{server.host}/ai/tok:1")
    with client() as c:  # no credentials: the token service grants anonymous pulls
        assert c.get_manifest(ref)[0].digest == digest
        with pytest.raises(AuthError):  # ... and nothing else
            c.upload_blob(ref, digest_of(b"x"), 1, b"x")
    assert any(r.account is None and r.status == 200 for r in token_server.requests)

    assert server.username
    write_docker_auth(server.host, server.username, "wrong-password")
    with client() as c, pytest.raises(AuthError) as error:
        c.get_manifest(ref)
    assert "wrong-password" not in str(error.value)
    assert token_server.count(status=401) >= 1


def test_upload_with_token_auth_is_readable_by_skopeo(
    docker_registry_token: RegistryServer, token_server: TokenServer, tiny_gguf: Path
) -> None:
    server = docker_registry_token
    assert server.username and server.password
    write_docker_auth(server.host, server.username, server.password)
    ref = reference.parse(f"{server.host}/ai/uploaded:1")
    data = tiny_gguf.read_bytes()
    layer = digest_of(data)
    config = json.dumps(
        {"config": {"format": "gguf"}, "rootfs": {"type": "rootfs", "diff_ids": [layer]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [{"mediaType": DOCKER_GGUF, "digest": layer, "size": len(data)}],
        }
    ).encode()
    with client() as c:
        assert not c.blob_exists(ref, layer)
        c.upload_blob(ref, layer, len(data), tiny_gguf, chunk_size=100_000)  # chunked PATCHes
        c.upload_blob(ref, digest_of(config), len(config), config)  # monolithic
        assert c.blob_exists(ref, layer)
        assert c.put_manifest(ref, manifest, OCI_MANIFEST) == digest_of(manifest)
    assert inspect_raw(server, "ai/uploaded:1") == manifest
    token = token_server.token(server.username, ("repository:ai/uploaded:pull",))
    blob = httpx.get(
        f"{server.url}/v2/ai/uploaded/blobs/{layer}", headers={"Authorization": f"Bearer {token}"}
    )
    assert hashlib.sha256(blob.content).hexdigest() == layer[7:]


# -- listings ----------------------------------------------------------------------------------------------


def test_tags_follow_link_pagination(
    docker_registry: RegistryServer, fault_proxy: FaultProxy, layout: OCILayout, tiny_gguf: Path
) -> None:
    push_tiny(layout, tiny_gguf, docker_registry, "ai/many:t0")
    manifest = layout.manifest_bytes("m")
    tags = [f"t{i}" for i in range(7)]
    for tag in tags[1:]:
        put = httpx.put(
            f"{docker_registry.url}/v2/ai/many/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert put.status_code == 201
    with client() as c:
        assert sorted(c.tags(reference.parse(f"{docker_registry.host}/ai/many:t0"))) == tags
        # docker-registry 2.8.2 ignores ?n=; the proxy pages its answer as the spec says (Link rel="next")
        fault_proxy.page_size = 2
        assert c.tags(reference.parse(f"{fault_proxy.host}/ai/many:t0")) == tags
    assert len(fault_proxy.requests("/tags/list")) == 4


def test_referrers_fall_back_to_the_tag_schema(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    """distribution 2.8 has no referrers API: clients (oras, cosign) keep an index under ``sha256-<hex>``."""
    subject = push_tiny(layout, tiny_gguf, docker_registry, "ai/signed:1")
    ref = reference.parse(f"{docker_registry.host}/ai/signed:1")
    with client() as c:
        assert c.referrers(ref, subject) == []
    empty = b"{}"
    start = httpx.post(f"{docker_registry.url}/v2/ai/signed/blobs/uploads/")
    location = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest_of(empty)})
    assert httpx.put(location, content=empty).status_code == 201
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest_of(empty),
                "size": 2,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2}
            ],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": subject,
                "size": len(layout.manifest_bytes("m")),
            },
        }
    ).encode()
    put = httpx.put(
        f"{docker_registry.url}/v2/ai/signed/manifests/{digest_of(signature)}",
        content=signature,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put.status_code == 201, put.text
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(signature),
        "size": len(signature),
        "artifactType": "application/vnd.example.signature",
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    put = httpx.put(
        f"{docker_registry.url}/v2/ai/signed/manifests/{subject.replace(':', '-')}",
        content=index,
        headers={"Content-Type": OCI_INDEX},
    )
    assert put.status_code == 201, put.text
    with client() as c:
        found = c.referrers(ref, subject)
        assert [(d.digest, d.artifact_type) for d in found] == [(digest_of(signature), entry["artifactType"])]
        assert c.referrers(ref, subject, artifact_type="application/vnd.other") == []


# -- mirrors -----------------------------------------------------------------------------------------------


def test_mirror_serves_docker_hub_names(
    docker_registry: RegistryServer,
    fault_proxy: FaultProxy,
    layout: OCILayout,
    tiny_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = push_tiny(layout, tiny_gguf, docker_registry, "ai/smollm2:x")
    monkeypatch.setenv("MODELCTL_MIRRORS", f"docker.io={fault_proxy.url}")
    monkeypatch.setenv("MODELCTL_RETRIES", "0")
    # Docker Hub itself is unreachable here (a dead proxy): only the mirror can answer.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ref = reference.parse("ai/smollm2:x")
    assert ref.registry == "docker.io"
    with client() as c:
        doc, _ = c.get_manifest(ref)
        assert doc.digest == digest
        assert c.get_blob(ref, config_digest(layout)) == layout.blob(config_digest(layout))
        assert read_all(c, ref, layer_digest(layout)) == tiny_gguf.read_bytes()
        with pytest.raises(NotFound):  # the mirror's definite "not found" beats an unreachable upstream
            c.get_manifest(reference.parse("ai/absent:1"))
    assert fault_proxy.requests("/v2/ai/smollm2/manifests/x")
    assert fault_proxy.blob_bytes(layer_digest(layout)) == tiny_gguf.stat().st_size
