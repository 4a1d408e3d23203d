"""A registry on object storage: Debian's docker-registry with its S3 driver and htpasswd auth, on moto's S3 server
(another loopback port), answering blob GETs with a 307 to a pre-signed URL, as distribution, Harbor and zot on S3
do. ``modelctl pull`` (a real process) follows the redirect without taking the registry's credentials along, and an
expired URL (403 from the store mid-blob) sends it back to the registry for a new one, keeping the bytes it has.

The client sees the registry through a recording proxy (``front``), which counts the registry's 307s; the store
records every request with its headers (tests/helpers/s3.py). ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import oci_layout, servers
from helpers.faults import FaultProxy, range_start
from helpers.ggufs import big_blob, sha256_file
from helpers.mirrors import basic
from helpers.oci_layout import OCILayout
from helpers.pulls import home, one_line_error, pull, store_is_consistent
from helpers.s3 import HEADER_WINDOW, ObjectStore
from helpers.servers import RegistryServer

SIZE = 4 << 20
CUT = 1 << 20
MAX_RATIO = 1.3
REPO = "ai/on-s3:1"


@pytest.fixture()
def store() -> Iterator[ObjectStore]:
    with ObjectStore() as found:
        yield found


@pytest.fixture()
def s3_registry(tmp_path: Path, store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryServer]:
    """docker-registry with htpasswd auth storing in ``store``; the AWS SDK inside it must not pick up this
    machine's AWS settings (a CA bundle for a proxy, a profile)."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    account = ("alice", secrets.token_hex(8))
    with servers.docker_registry(tmp_path / "s3-registry", htpasswd=account, storage=store.registry_storage()) as reg:
        yield reg


@pytest.fixture()
def layer(tmp_path: Path, layout: OCILayout, s3_registry: RegistryServer) -> str:
    """The model (one SIZE-byte layer) pushed to the registry, so into the bucket; the layer's digest."""
    path = tmp_path / "on-s3.gguf"
    digest = big_blob(path, SIZE)
    oci_layout.docker_v01_artifact(layout, "1", [path], digests={path: digest})
    oci_layout.push_layout(layout, "1", s3_registry, REPO)
    return digest


@pytest.fixture()
def front(s3_registry: RegistryServer, tmp_path: Path) -> Iterator[FaultProxy]:
    """The registry as the client sees it, its credentials stored for that name (DOCKER_CONFIG)."""
    assert s3_registry.credentials is not None
    with FaultProxy(s3_registry) as proxy:
        docker = tmp_path / "docker"
        docker.mkdir(exist_ok=True)
        auth = basic(*s3_registry.credentials).removeprefix("Basic ")
        (docker / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": auth}}}))
        yield proxy


def pulled(front: FaultProxy, digest: str, **env: str) -> None:
    ref = f"{front.host}/{REPO}"
    result = pull(ref, **env)
    assert result.returncode == 0, result.stderr
    assert ref in store_is_consistent()
    assert sha256_file(home() / "store" / "blobs" / "sha256" / digest.removeprefix("sha256:")) == digest


def data_path(digest: str) -> str:
    """Where the S3 driver keeps a blob's bytes."""
    hex_digest = digest.removeprefix("sha256:")
    return f"/docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"


def test_pull_follows_the_redirect_without_the_registrys_credentials(
    s3_registry: RegistryServer, store: ObjectStore, front: FaultProxy, layer: str
) -> None:
    assert s3_registry.credentials is not None
    registry_basic = basic(*s3_registry.credentials)
    pulled(front, layer)
    redirects = front.requests(f"/blobs/{layer}", "GET")
    assert redirects and all(s.status == 307 and s.authorization for s in redirects)
    fetched = store.requests(data_path(layer), presigned=True)
    assert fetched and {r.status for r in fetched} <= {200, 206}
    assert all(r.user_agent.startswith("modelctl/") for r in fetched)
    headers = {r.authorization for r in fetched}
    print(
        f"redirect: {len(redirects)} registry 307s for the layer, {len(fetched)} pre-signed GETs, "
        f"Authorization on them: {headers}, store bytes {store.bytes_served(data_path(layer))} of {SIZE}"
    )
    assert headers == {None}, "a pre-signed request carried an Authorization header"
    assert registry_basic not in {r.authorization for r in store.log}, "the registry's credentials reached the store"
    assert all((r.authorization or "").startswith("AWS4-HMAC-SHA256 ") for r in store.requests(presigned=False)[1:])
    assert SIZE <= store.bytes_served(data_path(layer)) <= MAX_RATIO * SIZE


def test_an_expired_url_mid_blob_asks_the_registry_again(
    store: ObjectStore, front: FaultProxy, layer: str
) -> None:
    """The store cuts the layer at 1 MiB, then refuses the resumed request as expired (403) once: the client asks
    the registry for a new URL and resumes from byte 1 MiB."""
    store.fault_path = data_path(layer)
    store.plan = [("cut", CUT), ("expire", 0)]
    pulled(front, layer, MODELCTL_PARTS="1")
    fetched = [r for r in store.requests(data_path(layer), presigned=True) if r.range != HEADER_WINDOW]
    asked = [s for s in front.requests(f"/blobs/{layer}", "GET") if s.range != HEADER_WINDOW]
    served = store.bytes_served(data_path(layer))
    print(
        f"expired URL: store answers {[(range_start(r.range), r.status) for r in fetched]}, "
        f"registry 307s for the download {len(asked)}, store bytes {served} of {SIZE} ({served / SIZE:.2f}x)"
    )
    assert [(range_start(r.range), r.status) for r in fetched] == [(0, 206), (CUT, 403), (CUT, 206)]
    assert len(asked) == 3 and all(s.status == 307 for s in asked), "each attempt did not start at the registry"
    assert store.plan == []
    assert served <= MAX_RATIO * SIZE


def test_a_store_that_keeps_refusing_is_one_line_with_the_fix(
    store: ObjectStore, front: FaultProxy, layer: str
) -> None:
    """Every pre-signed URL refused: after the retries (each with a new URL), exit 7 naming the store and what to
    check, nothing tagged and the layer not in the store."""
    store.fault_path = data_path(layer)
    store.plan = [("expire", 0)] * 20
    message = one_line_error(pull(f"{front.host}/{REPO}", MODELCTL_RETRIES="2", MODELCTL_PARTS="1"), 7)
    print(f"always refused: {message}")
    assert message.startswith(f"{store.url.removeprefix('http://')}, where {front.host} redirected blob {layer}")
    assert "refused it (HTTP 403; an expired pre-signed URL?)" in message and "storage settings" in message
    assert store_is_consistent() == {}
    assert not (home() / "store" / "blobs" / "sha256" / layer.removeprefix("sha256:")).exists()
    asked = [s for s in front.requests(f"/blobs/{layer}", "GET") if s.range != HEADER_WINDOW]
    assert len(asked) == 3, "each retry should have asked the registry for a new URL"
