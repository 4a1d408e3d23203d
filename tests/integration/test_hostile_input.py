"""Hostile input from outside reaches the real CLI as one typed line, never a RecursionError (issue 14 item 4).

A real docker-registry stores a model manifest with a field nested 9,999 deep (distribution's own parser stops at
10,000); a loopback server stands in for a registry that sends what no registry stores: ``{"a":`` x 50,000, a model
config nested as deep, a 2 MiB gzip body that inflates to 2 GiB, a token service answering the same nesting.
``pull``, ``inspect --remote`` and ``fit --remote`` each end in exit 5 with a hint (7 for the token service), and
nothing is tagged; ``load`` of a tar whose index.json nests as deep ends in exit 5 too.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.cli import modelctl, one_line_error
from helpers.fuzz import DEEP
from helpers.hostile import HostileRegistry
from helpers.servers import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3"
COMMANDS = [("pull",), ("inspect", "--remote"), ("fit", "--remote")]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(config: bytes, layer: bytes, *, extra: bytes = b"") -> bytes:
    """A Docker model manifest naming ``config`` and one GGUF ``layer``; ``extra`` (raw JSON) as field "x"."""
    head = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_GGUF, "digest": digest(layer), "size": len(layer)}],
    }
    raw = json.dumps(head).encode()
    return raw[:-1] + b', "x": ' + extra + b"}" if extra else raw


def tags(home: Path) -> list[str]:
    listed = modelctl("list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    return [m["reference"] for m in json.loads(listed.stdout)]


@pytest.fixture()
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as server:
        yield server


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_manifest_nested_50000_deep(hostile: HostileRegistry, tmp_path: Path, command: tuple[str, ...]) -> None:
    hostile.serve("/v2/ai/deep/manifests/1", DEEP, content_type=OCI_MANIFEST)
    result = modelctl(*command, f"{hostile.host}/ai/deep:1", home=tmp_path / "home")
    one_line_error(result, 5, says="nests deeper than 64 levels", hint="serves a broken or hostile manifest")
    assert tags(tmp_path / "home") == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_model_config_nested_50000_deep(hostile: HostileRegistry, tmp_path: Path, command: tuple[str, ...]) -> None:
    layer = b"GGUF" + bytes(64)
    hostile.serve("/v2/ai/deep/manifests/1", manifest(DEEP, layer), content_type=OCI_MANIFEST)
    hostile.serve(f"/v2/ai/deep/blobs/{digest(DEEP)}", DEEP, content_type="application/octet-stream")
    result = modelctl(*command, f"{hostile.host}/ai/deep:1", home=tmp_path / "home")
    one_line_error(result, 5, says="malformed model config: it nests deeper than 64 levels", hint="publisher")
    assert tags(tmp_path / "home") == []


@pytest.mark.parametrize(
    ("answer", "says"),
    [(DEEP, "nests deeper than 64 levels"), (b'{"token": ' + b'"x' + b"\\n" * 10 + b'"}', "answered without a token")],
    ids=["nested-50000", "newline-in-token"],
)
def test_a_hostile_token_service(tmp_path: Path, answer: bytes, says: str) -> None:
    with HostileRegistry(bearer=True) as registry:
        registry.serve("/token", answer)
        result = modelctl("pull", f"{registry.host}/ai/x:1", home=tmp_path / "home")
    one_line_error(result, 7, says=says, hint="the token service of")
    assert tags(tmp_path / "home") == []


def test_a_gzip_bomb_stops_at_the_manifest_limit(hostile: HostileRegistry, tmp_path: Path) -> None:
    """2 MiB of gzip that would inflate to 2 GiB: refused at 4 MiB, the client's memory stays small."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(deflate.compress(bytes(1 << 20)) for _ in range(2048)) + deflate.flush()
    hostile.serve("/v2/ai/bomb/manifests/1", bomb, content_type=OCI_MANIFEST, Content_Encoding="gzip")
    result = modelctl("inspect", "--remote", f"{hostile.host}/ai/bomb:1", home=tmp_path / "home", rss=True)
    one_line_error(result, 5, says="is larger than the 4096 KiB limit")
    assert 0 < result.max_rss_kb < 150 * 1024, f"{result.max_rss_kb} KiB resident (httpx inflated ~1 GiB per read)"


def put_raw(registry: RegistryServer, repo: str, tag: str, blobs: list[bytes], raw_manifest: bytes) -> None:
    """Upload ``blobs`` and PUT the manifest bytes as they are (json.dumps cannot write 9,999 levels)."""
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        for data in blobs:
            start = client.post(f"/v2/{repo}/blobs/uploads/")
            assert start.status_code == 202, start.text
            url = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest(data)})
            assert client.put(url, content=data).status_code == 201
        put = client.put(f"/v2/{repo}/manifests/{tag}", content=raw_manifest, headers={"Content-Type": OCI_MANIFEST})
        assert put.status_code == 201, put.text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_real_registry_serving_a_manifest_nested_9999_deep(
    docker_registry: RegistryServer, tmp_path: Path, command: tuple[str, ...]
) -> None:
    config, layer = json.dumps({"config": {"format": "gguf"}}).encode(), b"GGUF" + bytes(64)
    nested = b'{"a":' * 9999 + b"1" + b"}" * 9999
    put_raw(docker_registry, "ai/deep", "1", [config, layer], manifest(config, layer, extra=nested))
    result = modelctl(*command, f"{docker_registry.host}/ai/deep:1", home=tmp_path / "home")
    one_line_error(result, 5, says="nests deeper than 64 levels", hint="serves a broken or hostile manifest")
    assert tags(tmp_path / "home") == []


def test_load_of_a_tar_whose_index_nests_50000_deep(tmp_path: Path) -> None:
    archive = tmp_path / "deep.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", DEEP)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = modelctl("load", "-i", str(archive), home=tmp_path / "home")
    one_line_error(result, 5, says="malformed index.json of", hint="nothing was loaded")
    assert "nests deeper than 64 levels" in result.stderr
    assert tags(tmp_path / "home") == []
