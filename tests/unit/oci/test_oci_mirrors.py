"""The mirror file (modelctl.mirrors) and where the client sends each read (modelctl.oci.endpoints): capabilities,
Spegel's ``ns`` query, configured headers, ``override_path``, headers and tokens that stay with their origin, and
a refused pre-signed URL that sends the client back to the registry. Network-free (httpx.MockTransport)."""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.tls import self_signed

from modelctl import reference
from modelctl.config import Config, from_env
from modelctl.errors import RegistryError, UsageError
from modelctl.mirrors import PULL, RESOLVE, Mirror, load, parse
from modelctl.oci import endpoints
from modelctl.oci.client import RegistryClient
from modelctl.oci.credentials import Credentials

DOCS = Path(__file__).resolve().parents[3] / "docs" / "mirrors.md"
DATA = b"weights " * 1000
CONFIG_BLOB = b"{}"
Handler = Callable[[httpx.Request], httpx.Response]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
            "digest": sha(CONFIG_BLOB),
            "size": len(CONFIG_BLOB),
        },
        "layers": [{"mediaType": "application/vnd.docker.ai.gguf.v3", "digest": sha(DATA), "size": len(DATA)}],
    }
).encode()
REF = reference.parse("reg.test/ai/x:1")


class Host:
    """A registry (or mirror) that serves the one model and records every request it sees."""

    def __init__(self, *, challenge: str | None = None, token: str | None = None) -> None:
        self.seen: list[httpx.Request] = []
        self.challenge = challenge
        self.token = token

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.seen]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(snapshot(request))
        if self.challenge and request.headers.get("Authorization") != f"Bearer {self.token}":
            return httpx.Response(401, headers={"WWW-Authenticate": self.challenge})
        found = re.fullmatch(r"/(?:.*/)?v2/ai/x/(manifests|blobs)/(.+)", request.url.path)
        if found is None:
            return httpx.Response(404)
        kind, name = found.groups()
        if kind == "manifests" and name in ("1", sha(MANIFEST)):
            headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            return httpx.Response(200, headers={**headers, "Docker-Content-Digest": sha(MANIFEST)}, content=MANIFEST)
        blobs = {sha(DATA): DATA, sha(CONFIG_BLOB): CONFIG_BLOB}
        if kind == "blobs" and name in blobs:
            return httpx.Response(200, content=blobs[name])
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})


def snapshot(request: httpx.Request) -> httpx.Request:
    """A copy of the request as it arrived: the auth flow edits the headers of the request object it retries."""
    return httpx.Request(request.method, request.url, headers=dict(request.headers))


def client(
    tmp_path: Path, hosts: dict[str, Handler], creds: dict[str, Credentials] | None = None, **kw: Any
) -> RegistryClient:
    def route(request: httpx.Request) -> httpx.Response:
        handler = hosts.get(request.url.netloc.decode())
        if handler is None:
            raise httpx.ConnectError("refused", request=request)
        return handler(request)

    config = Config(home=tmp_path, docker_config=tmp_path / "docker", retries=1, **kw)
    return RegistryClient(
        config,
        transport=httpx.MockTransport(route),
        sleep=lambda _: None,
        credentials=lambda host: (creds or {}).get(host),
    )


def read_blob(c: RegistryClient, digest: str) -> bytes:
    with c.open_blob(REF, digest) as blob:
        return b"".join(blob.iter_chunks())


# -- the file ------------------------------------------------------------------------------------------------


def test_the_documented_examples_parse(tmp_path: Path) -> None:
    """Every TOML block of docs/mirrors.md is a valid mirror file (CA paths made to exist here)."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 2, "docs/mirrors.md has no examples"
    for block in blocks:
        for ca in re.findall(r'ca = "([^"]+)"', block):
            (tmp_path / Path(ca).name).write_text("x")
            block = block.replace(ca, Path(ca).name)
        assert parse(block, where="docs", base=tmp_path)


def test_spegel_and_dragonfly_hosts(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    text = """
[[registry."docker.io".hosts]]
url = "http://127.0.0.1:30020/"
ns = true

[[registry."docker.io".hosts]]
url = "https://127.0.0.1:65001"
capabilities = ["pull"]
headers = { X-Dragonfly-Registry = "https://index.docker.io", X-Two = ["a", "b"] }
ca = "ca.pem"

[[registry."ghcr.io".hosts]]
url = "https://harbor.test/v2/ghcr-proxy"
override_path = true
insecure = true
"""
    found = parse(text, where="mirrors.toml", base=tmp_path)
    spegel, dragonfly = found["docker.io"]
    assert spegel == Mirror(url="http://127.0.0.1:30020", ns=True)
    assert spegel.capabilities == {PULL, RESOLVE} and spegel.api_root == "http://127.0.0.1:30020/v2"
    assert dragonfly.capabilities == {PULL} and dragonfly.ca == tmp_path / "ca.pem" and not dragonfly.ns
    assert dragonfly.headers == (("X-Dragonfly-Registry", "https://index.docker.io"), ("X-Two", "a"), ("X-Two", "b"))
    (harbor,) = found["ghcr.io"]
    assert harbor.api_root == "https://harbor.test/v2/ghcr-proxy" and harbor.insecure


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("registry = [", "not valid TOML"),
        ('mirrors = "x"', "unknown top-level key 'mirrors'"),
        ('[registry."docker.io"]\nurl = "http://m"', "must hold only a hosts list"),
        ('[[registry."d".hosts]]\nurl = "ftp://m"', "url must be an http"),
        ('[[registry."d".hosts]]\nurl = "http://u:p@m"', "without credentials"),
        ('[[registry."d".hosts]]\nurl = "http://m?x=1"', "without credentials or a query"),
        ('[[registry."d".hosts]]\nurl = "http://m:0"', "must be scheme://host"),
        ('[[registry."d".hosts]]\nurl = "http://m"\ncapabilities = ["push"]', "pull and/or resolve"),
        ('[[registry."d".hosts]]\nurl = "http://m"\ncapabilities = []', "pull and/or resolve"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nns = "yes"', "ns must be true or false"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nport = 5', "unknown key 'port'"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nheaders = { Authorization = "Basic x" }', "modelctl's to set"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nheaders = { "Bad Name" = "x" }', "printable ASCII"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nheaders = { X-A = "a\\nb" }', "printable ASCII"),
        ('[[registry."d".hosts]]\nurl = "http://m"\nca = "ca.pem"', "apply to https:// hosts"),
        ('[[registry."d".hosts]]\nurl = "https://m"\nca = "absent.pem"', "does not exist"),
        ('[[registry."d".hosts]]\nurl = "https://m"\nca = "ca.pem"\ninsecure = true', "exclude each other"),
    ],
)
def test_mistakes_are_one_line_usage_errors(tmp_path: Path, text: str, complaint: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(UsageError) as caught:
        parse(text, where="/etc/x/mirrors.toml", base=tmp_path)
    assert complaint in str(caught.value) and str(caught.value).startswith("/etc/x/mirrors.toml")
    assert caught.value.hint and "\n" not in str(caught.value)


def test_the_file_lives_in_modelctl_home_and_the_short_form_wins(tmp_path: Path) -> None:
    (tmp_path / "mirrors.toml").write_text('[[registry."docker.io".hosts]]\nurl = "http://file"\nns = true\n')
    assert load(tmp_path / "absent.toml") == {}
    config = from_env({"MODELCTL_HOME": str(tmp_path)})
    assert config.config_dir == tmp_path
    assert config.mirrors_for("docker.io") == (Mirror(url="http://file", ns=True),)
    config = from_env({"MODELCTL_HOME": str(tmp_path), "MODELCTL_MIRRORS": "docker.io=http://env/"})
    assert config.mirrors_for("docker.io") == (Mirror(url="http://env"),)
    assert config.mirrors_for("ghcr.io") == ()


def test_a_broken_file_stops_every_command_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "mirrors.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match=r"mirrors\.toml is not UTF-8"):
        from_env({"MODELCTL_HOME": str(tmp_path)})


# -- where each read goes ----------------------------------------------------------------------------------


def test_a_pull_only_mirror_is_never_asked_for_a_tag(tmp_path: Path) -> None:
    upstream, mirror = Host(), Host()
    mirrors = {"reg.test": (Mirror(url="http://mirror.test", capabilities=frozenset({PULL})),)}
    with client(tmp_path, {"reg.test": upstream, "mirror.test": mirror}, mirror_hosts=mirrors) as c:
        doc, _ = c.get_manifest(REF)
        assert read_blob(c, sha(DATA)) == DATA
        c.get_manifest(REF.with_digest(doc.digest))
    assert upstream.paths() == ["GET /v2/ai/x/manifests/1"]
    assert mirror.paths() == [f"GET /v2/ai/x/blobs/{sha(DATA)}", f"GET /v2/ai/x/manifests/{doc.digest}"]


def test_ns_query_headers_and_override_path(tmp_path: Path) -> None:
    upstream, mirror = Host(), Host()
    mirror_host = Mirror(
        url="http://mirror.test/proxy/v2",
        ns=True,
        override_path=True,
        headers=(("X-Dragonfly-Registry", "http://reg.test"),),
    )
    hosts = {"reg.test": upstream, "mirror.test": mirror}
    with client(tmp_path, hosts, mirror_hosts={"reg.test": (mirror_host,)}) as c:
        c.get_manifest(REF)
        assert read_blob(c, sha(DATA)) == DATA
    assert upstream.seen == []
    for request in mirror.seen:
        assert request.url.path.startswith("/proxy/v2/ai/x/")
        assert request.url.params["ns"] == "reg.test"
        assert request.headers["X-Dragonfly-Registry"] == "http://reg.test"


def test_a_mirror_that_failed_the_manifest_is_asked_last_for_blobs(tmp_path: Path) -> None:
    upstream, second = Host(), Host()
    first_seen: list[str] = []

    def first(request: httpx.Request) -> httpx.Response:
        first_seen.append(request.url.path)
        return httpx.Response(400)  # Spegel without ?ns=

    mirrors = {"reg.test": (Mirror(url="http://first.test"), Mirror(url="http://second.test"))}
    hosts = {"reg.test": upstream, "first.test": first, "second.test": second}
    with client(tmp_path, hosts, mirror_hosts=mirrors) as c:
        c.get_manifest(REF)
        assert read_blob(c, sha(DATA)) == DATA
    assert first_seen == ["/v2/ai/x/manifests/1"]
    assert second.paths() == ["GET /v2/ai/x/manifests/1", f"GET /v2/ai/x/blobs/{sha(DATA)}"]
    assert upstream.seen == []


# -- what stays with its origin ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("http://mirror.test/elsewhere", True),
        ("http://mirror.test:8080/elsewhere", False),
        ("https://mirror.test/elsewhere", False),
        ("http://cdn.test/elsewhere", False),
    ],
)
def test_configured_headers_and_authorization_follow_only_same_origin_redirects(
    tmp_path: Path, target: str, kept: bool
) -> None:
    seen: list[httpx.Request] = []

    def mirror(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/elsewhere":
            seen.append(snapshot(request))
            return httpx.Response(200, content=DATA)
        if request.headers.get("Authorization") != "Basic bWlycm9yOnB3":  # mirror:pw
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="m"'})
        return httpx.Response(307, headers={"Location": target})

    def cdn(request: httpx.Request) -> httpx.Response:
        seen.append(snapshot(request))
        return httpx.Response(200, content=DATA)

    hosts = {"mirror.test": mirror, "mirror.test:8080": cdn, "cdn.test": cdn, "mirror.test:443": cdn}
    creds = {"mirror.test": Credentials("mirror", "pw")}
    mirrors = {"reg.test": (Mirror(url="http://mirror.test", headers=(("X-Dragonfly-Registry", "r"),)),)}
    with client(tmp_path, hosts, creds, mirror_hosts=mirrors) as c:
        assert read_blob(c, sha(DATA)) == DATA
    (final,) = seen
    assert ("Authorization" in final.headers) is kept
    assert ("X-Dragonfly-Registry" in final.headers) is kept


def test_a_token_got_with_the_registrys_credentials_never_goes_to_a_mirror(tmp_path: Path) -> None:
    """A pass-through mirror answers with the registry's own challenge (same realm and service). The registry's
    token (fetched with its credentials) stays with the registry; the mirror gets the one fetched with the
    mirror's credentials (here none: anonymous)."""
    challenge = 'Bearer realm="https://auth.test/token",service="reg.test"'
    upstream = Host(challenge=challenge, token="for-alice")
    mirror = Host(challenge=challenge, token="anonymous")
    issued: list[str] = []

    def auth(request: httpx.Request) -> httpx.Response:
        token = "for-alice" if request.headers.get("Authorization") else "anonymous"
        issued.append(token)
        return httpx.Response(200, json={"token": token, "expires_in": 300})

    hosts = {"reg.test": upstream, "mirror.test": mirror, "auth.test": auth}
    creds = {"reg.test": Credentials("alice", "secret")}
    mirrors = {"reg.test": (Mirror(url="http://mirror.test", capabilities=frozenset({PULL})),)}
    with client(tmp_path, hosts, creds, mirror_hosts=mirrors) as c:
        for _ in range(3):  # the tag upstream, the blob from the mirror, in turns
            c.get_manifest(REF)
            assert read_blob(c, sha(DATA)) == DATA
    assert "for-alice" in issued and "anonymous" in issued
    sent_to_mirror = {r.headers.get("Authorization") for r in mirror.seen}
    assert "Bearer for-alice" not in sent_to_mirror and "Bearer anonymous" in sent_to_mirror
    assert not any("Basic" in (r.headers.get("Authorization") or "") for r in mirror.seen)


# -- pre-signed URLs -------------------------------------------------------------------------------------------


def test_a_refused_presigned_url_asks_the_registry_again(tmp_path: Path) -> None:
    """The object store answers 403 (expired) once: a temporary error, and the retry gets a new URL from the
    registry instead of trying the old one."""
    signed: list[str] = []
    store_answers = [403]

    def registry(request: httpx.Request) -> httpx.Response:
        signed.append(f"sig{len(signed)}")
        return httpx.Response(307, headers={"Location": f"http://store.test:9000/blob?X-Amz-Signature={signed[-1]}"})

    def store(request: httpx.Request) -> httpx.Response:
        if store_answers and store_answers.pop(0) == 403:
            return httpx.Response(403, content=b"<Error><Code>AccessDenied</Code><Message>Request has expired")
        return httpx.Response(200, content=DATA)

    with client(tmp_path, {"reg.test": registry, "store.test:9000": store}) as c:
        with pytest.raises(RegistryError) as caught:
            read_blob(c, sha(DATA))
        assert caught.value.temporary and caught.value.status == 403
        assert "expired pre-signed URL" in str(caught.value) and "store.test:9000" in str(caught.value)
        assert read_blob(c, sha(DATA)) == DATA  # what the download engine's retry does
        assert c.get_blob(REF, sha(DATA)) == DATA
    assert signed == ["sig0", "sig1", "sig2"]


def test_a_403_from_the_registry_itself_is_still_denied(tmp_path: Path) -> None:
    from modelctl.errors import AuthError

    with client(tmp_path, {"reg.test": lambda r: httpx.Response(403)}) as c, pytest.raises(AuthError):
        read_blob(c, sha(DATA))


# -- TLS per mirror --------------------------------------------------------------------------------------------


def test_tls_mounts_per_mirror_origin(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "mirror.test")
    hosts = {
        "docker.io": (
            Mirror(url="https://mirror.test:5000/a", ca=cert),
            Mirror(url="https://other.test", insecure=True),
            Mirror(url="http://plain.test"),
        )
    }
    mounts = endpoints.tls_mounts(Config(home=tmp_path, mirror_hosts=hosts))
    assert sorted(mounts) == ["https://mirror.test:5000", "https://other.test"]
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(UsageError, match=r"bad\.pem"):
        endpoints.tls_mounts(Config(home=tmp_path, mirror_hosts={"d": (Mirror(url="https://m", ca=bad),)}))
    assert isinstance(endpoints._tls_context(Mirror(url="https://m", ca=cert)), ssl.SSLContext)
