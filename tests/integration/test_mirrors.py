"""Mirrors from ``mirrors.toml``: ``modelctl pull`` (a real process) through loopback stand-ins of Spegel, dfdaemon
and a pull-through cache (tests/helpers/mirrors.py) in front of Debian's docker-registry.

The client sees the registry through a byte-counting proxy (``front``); the mirrors fetch from the registry behind
it. So ``front`` counts what came from the registry and each mirror what came from it. ``pytest -s`` prints the
figures.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import oci_layout
from helpers.faults import FaultProxy, range_start
from helpers.ggufs import big_blob, sha256_file
from helpers.mirrors import HEADER_WINDOW, MirrorStandIn, basic
from helpers.oci_layout import OCILayout
from helpers.pulls import home, pull, store_is_consistent
from helpers.servers import RegistryServer
from helpers.tls import self_signed

SIZE = 4 << 20
CUT = 1536 << 10
MAX_RATIO = 1.3
REPO = "ai/mirrored:1"


@dataclass(frozen=True)
class Model:
    digest: str
    """The GGUF layer's digest."""
    size: int


@pytest.fixture()
def model(tmp_path: Path, layout: OCILayout) -> Model:
    path = tmp_path / "mirrored.gguf"
    digest = big_blob(path, SIZE)
    oci_layout.docker_v01_artifact(layout, "1", [path], digests={path: digest})
    return Model(digest, SIZE)


@pytest.fixture()
def front(docker_registry: RegistryServer, layout: OCILayout, model: Model) -> Iterator[FaultProxy]:
    """The anonymous registry, holding the model, as the client sees it: through a byte-counting proxy."""
    oci_layout.push_layout(layout, "1", docker_registry, REPO)
    with FaultProxy(docker_registry) as proxy:
        yield proxy


def write_mirrors(registry: str, *hosts: dict[str, object]) -> None:
    """``$MODELCTL_HOME/mirrors.toml`` with ``hosts`` for ``registry``."""
    lines = []
    for host in hosts:
        lines.append(f'[[registry."{registry}".hosts]]')
        for key, value in host.items():
            if isinstance(value, dict):
                value = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
            else:
                value = json.dumps(value)
            lines.append(f"{key} = {value}")
    home().mkdir(parents=True, exist_ok=True)
    (home() / "mirrors.toml").write_text("\n".join(lines) + "\n")


def pulled(front: FaultProxy, model: Model, **env: str) -> None:
    """``modelctl pull`` of the model through ``front``'s name: exit 0, tagged, the layer hashing right."""
    ref = f"{front.host}/{REPO}"
    result = pull(ref, **env)
    assert result.returncode == 0, result.stderr
    assert ref in store_is_consistent()
    assert sha256_file(home() / "store" / "blobs" / "sha256" / model.digest.removeprefix("sha256:")) == model.digest


def figures(label: str, mirror: MirrorStandIn, front: FaultProxy, model: Model) -> tuple[int, int]:
    """(layer bytes from the mirror, from the registry), printed for the issue's note."""
    from_mirror, from_registry = mirror.blob_bytes(model.digest), front.blob_bytes(model.digest)
    print(f"{label}: layer bytes from the mirror {from_mirror}, from the registry {from_registry} (size {model.size})")
    return from_mirror, from_registry


def tag_requests(mirror: MirrorStandIn) -> list[int]:
    """The statuses the mirror answered to manifest requests by tag."""
    return [s.status for s in mirror.requests("/manifests/1")]


# -- Spegel: ?ns= ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", [True, False], ids=["ns-on", "ns-off"])
def test_spegel_answers_a_tag_only_with_ns(
    docker_registry: RegistryServer, front: FaultProxy, model: Model, ns: bool
) -> None:
    with MirrorStandIn(docker_registry.url, kind="spegel", registry=front.host) as spegel:
        write_mirrors(front.host, {"url": spegel.url, "ns": ns})
        pulled(front, model)
        from_mirror, from_registry = figures(f"spegel ns={ns}", spegel, front, model)
        if ns:
            assert tag_requests(spegel) == [200]
            assert {s.query.get("ns") for s in spegel.log} == {front.host}  # on every request, blobs too
            assert from_mirror >= model.size and from_registry == 0
            assert not front.requests("/manifests/")
        else:
            assert tag_requests(spegel) == [400]  # then the tag resolves upstream, and the blobs follow it
            assert from_mirror == 0 and from_registry >= model.size
            assert all("ns" not in s.query for s in spegel.log)


# -- dfdaemon: X-Dragonfly-Registry ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_dragonfly_needs_its_header(
    docker_registry: RegistryServer, front: FaultProxy, model: Model, header: bool
) -> None:
    with MirrorStandIn(docker_registry.url, kind="dragonfly") as dfdaemon:
        host: dict[str, object] = {"url": dfdaemon.url}
        if header:
            host["headers"] = {"X-Dragonfly-Registry": docker_registry.url}
        write_mirrors(front.host, host)
        pulled(front, model)
        from_mirror, from_registry = figures(f"dragonfly header={header}", dfdaemon, front, model)
        named = {s.headers.get("X-Dragonfly-Registry") for s in dfdaemon.log}
        if header:
            assert named == {docker_registry.url} and {s.status for s in dfdaemon.log} <= {200, 206}
            assert from_mirror >= model.size and from_registry == 0
        else:
            assert named == {None} and {s.status for s in dfdaemon.log} == {400}
            assert from_mirror == 0 and from_registry >= model.size


# -- capabilities ------------------------------------------------------------------------------------------


def test_a_pull_only_mirror_is_never_asked_to_resolve_a_tag(
    docker_registry: RegistryServer, front: FaultProxy, model: Model
) -> None:
    with MirrorStandIn(docker_registry.url) as cache:
        write_mirrors(front.host, {"url": cache.url, "capabilities": ["pull"]})
        pulled(front, model)
        from_mirror, from_registry = figures("pull-only", cache, front, model)
        assert not cache.requests("/manifests/"), [s.path for s in cache.log]
        assert [s.status for s in front.requests(f"/v2/{REPO.split(':')[0]}/manifests/1")] == [200]
        assert from_mirror >= model.size and from_registry == 0


# -- a mirror that fails mid-blob ----------------------------------------------------------------------------


def test_a_mirror_that_fails_mid_blob_hands_over_keeping_the_partial(
    docker_registry: RegistryServer, front: FaultProxy, model: Model
) -> None:
    """The mirror cuts the layer after CUT bytes and then answers 503 for it: the next host (the registry) is asked
    for the rest only, from byte CUT."""
    with MirrorStandIn(docker_registry.url, cut_blob_after=CUT) as cache:
        write_mirrors(front.host, {"url": cache.url})
        pulled(front, model, MODELCTL_PARTS="1")
        from_mirror, from_registry = figures("mid-blob failure", cache, front, model)
        gets = [s for s in front.requests(f"/blobs/{model.digest}", "GET") if s.range != HEADER_WINDOW]
        assert [range_start(s.range) for s in gets] == [CUT]
        assert cache.requests(f"/blobs/{model.digest}", 503), "the mirror was not asked again"
        window = 256 << 10
        assert from_mirror == CUT + window and from_registry == model.size - CUT
        assert from_mirror + from_registry <= MAX_RATIO * model.size


# -- credentials ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mirror_login", [True, False], ids=["mirror-login", "no-mirror-login"])
def test_a_mirror_gets_its_own_credentials_never_the_registrys(
    tmp_path: Path,
    docker_registry_htpasswd: RegistryServer,
    layout: OCILayout,
    model: Model,
    mirror_login: bool,
) -> None:
    """The registry wants alice's password; the mirror, a pull-through cache, wants its own account (carol) and
    fetches with alice's account itself. Tags resolve at the registry, blobs come from the mirror."""
    registry = docker_registry_htpasswd
    assert registry.username and registry.password
    oci_layout.push_layout(layout, "1", registry, REPO)
    alice = basic(registry.username, registry.password)
    carol = ("carol", "mirror-secret")
    with (
        FaultProxy(registry) as front,
        MirrorStandIn(registry.url, credentials=carol, upstream_credentials=registry.credentials) as cache,
    ):
        auths = {front.host: {"auth": alice.removeprefix("Basic ")}}
        if mirror_login:
            auths[cache.host] = {"auth": basic(*carol).removeprefix("Basic ")}
        docker = tmp_path / "docker"
        docker.mkdir(exist_ok=True)
        (docker / "config.json").write_text(json.dumps({"auths": auths}))
        write_mirrors(front.host, {"url": cache.url, "capabilities": ["pull"]})
        pulled(front, model)
        from_mirror, from_registry = figures(f"credentials mirror_login={mirror_login}", cache, front, model)
        sent = cache.authorizations()
        print(f"Authorization values the mirror saw: {sorted(map(str, sent))}")
        assert alice not in sent
        assert front.requests() and all(s.authorization for s in front.requests() if s.status == 200)
        if mirror_login:
            assert sent <= {None, basic(*carol)} and basic(*carol) in sent
            assert from_mirror >= model.size and from_registry == 0
        else:
            assert sent == {None}  # it challenged, and nothing of the registry's was offered instead
            assert from_mirror == 0 and from_registry >= model.size


# -- TLS with the mirror's own CA -------------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False], ids=["ca", "no-ca"])
def test_a_mirror_behind_tls_with_its_own_ca(
    tmp_path: Path, docker_registry: RegistryServer, front: FaultProxy, model: Model, trusted: bool
) -> None:
    cert, key = self_signed(tmp_path, "127.0.0.1")
    context = ssl_server(cert, key)
    with MirrorStandIn(docker_registry.url, tls=context) as cache:
        host: dict[str, object] = {"url": cache.url}
        if trusted:
            host["ca"] = str(cert)
        write_mirrors(front.host, host)
        pulled(front, model)
        from_mirror, from_registry = figures(f"tls ca={trusted}", cache, front, model)
        if trusted:
            assert from_mirror >= model.size and from_registry == 0
        else:  # the handshake fails (the system's CAs do not know it) and the registry answers instead
            assert cache.log == [] and from_registry >= model.size


def ssl_server(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
