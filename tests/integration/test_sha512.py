"""sha512 end to end against Debian's docker-registry (distribution 2.8): a model whose config and layer are named by
sha512 digests is pushed with raw HTTP, then pulled by tag and by ``@sha512:`` digest, inspected, located, saved,
loaded, locked and pushed by modelctl.

What distribution 2.8 refuses: it keeps sha512 *blobs* (upload with ``?digest=sha512:...``, GET, HEAD, ranges), but
it names *manifests* by sha256 only: ``PUT /manifests/sha512:...`` answers ``DIGEST_INVALID`` and ``GET
/manifests/sha512:...`` ``MANIFEST_UNKNOWN`` (``test_distribution_names_manifests_by_sha256_only`` pins that). So the
``@sha512:`` pull goes through :class:`Sha512Manifests`, a test-side shim in front of the real registry that serves
the manifest it was told about under its sha512 digest, as a registry with sha512 manifest support does; every blob
still comes from distribution.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers.oci_layout import TINY_MODEL_CONFIG, model_manifest
from helpers.servers import RegistryServer, free_port, serving

from modelctl.oci import mediatypes as mt

REPO = "ai/tiny512"
TAG = "1"


@dataclass(frozen=True)
class Pushed:
    manifest: bytes
    sha256: str
    """The manifest's digest as distribution names it."""
    sha512: str
    layer: str
    config: str


def of(data: bytes, algorithm: str) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def push_sha512_model(registry: RegistryServer, gguf: bytes, repo: str = REPO, tag: str = TAG) -> Pushed:
    """Push a Docker v0.1 model whose config and GGUF layer are named by sha512, with raw HTTP (not modelctl)."""
    client = httpx.Client(base_url=registry.url, timeout=60)

    def blob(data: bytes) -> str:
        digest = of(data, "sha512")
        start = client.post(f"/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        done = client.put(str(httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})), content=data)
        assert done.status_code == 201, done.text
        return digest

    config = TINY_MODEL_CONFIG
    layer, config_digest = blob(gguf), blob(config)
    manifest = model_manifest(config_digest, len(config), layer, len(gguf))
    put = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": mt.OCI_MANIFEST})
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == of(manifest, "sha256")
    return Pushed(manifest, of(manifest, "sha256"), of(manifest, "sha512"), layer, config_digest)


class Sha512Manifests:
    """A proxy to a registry that also answers ``GET/HEAD /v2/<repo>/manifests/<sha512 digest>`` for the manifests
    it was given (distribution 2.8 cannot); everything else goes to the registry untouched."""

    def __init__(self, upstream: str, manifests: dict[str, bytes]) -> None:
        self.upstream = upstream
        self.manifests = manifests
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[Sha512Manifests]:
        shim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.handle_any()

            def do_GET(self) -> None:
                self.handle_any()

            def handle_any(self) -> None:
                name = self.path.split("?")[0].rpartition("/manifests/")[2]
                if "/manifests/" in self.path and name in shim.manifests:
                    body = shim.manifests[name]
                    self.send_response(200)
                    self.send_header("Content-Type", mt.OCI_MANIFEST)
                    self.send_header("Docker-Content-Digest", name)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection(shim.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                while chunk := resp.read(1 << 20):
                    self.wfile.write(chunk)
                conn.close()

        with serving(Handler, port=self.port):
            yield self


def modelctl(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) if home is None else dict(os.environ, MODELCTL_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=env, capture_output=True, text=True, timeout=300, stdin=None
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def store() -> Path:
    return Path(os.environ["MODELCTL_HOME"]) / "store"


def sha512_blob(digest: str, root: Path | None = None) -> Path:
    return (root or store()) / "blobs" / "sha512" / digest.removeprefix("sha512:")


def test_distribution_names_manifests_by_sha256_only(docker_registry: RegistryServer, tiny_gguf: Path) -> None:
    """What the shim stands in for: distribution 2.8 keeps sha512 blobs but no manifest by a sha512 digest."""
    pushed = push_sha512_model(docker_registry, tiny_gguf.read_bytes())
    client = httpx.Client(base_url=docker_registry.url, timeout=30)
    assert client.get(f"/v2/{REPO}/blobs/{pushed.layer}").content == tiny_gguf.read_bytes()
    accept = {"Accept": mt.OCI_MANIFEST}
    assert client.get(f"/v2/{REPO}/manifests/{pushed.sha512}", headers=accept).status_code == 404
    put = client.put(
        f"/v2/{REPO}/manifests/{pushed.sha512}", content=pushed.manifest, headers={"Content-Type": mt.OCI_MANIFEST}
    )
    assert put.status_code == 400 and "DIGEST_INVALID" in put.text
    # so modelctl, asked for that digest, reports a missing manifest (exit 3), not a malformed digest (exit 5)
    result = modelctl("pull", "-q", f"{docker_registry.host}/{REPO}@{pushed.sha512}")
    assert result.returncode == 3, result.stderr


def test_pull_by_tag_inspect_path_fit_save_load_push(
    docker_registry: RegistryServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    gguf = tiny_gguf.read_bytes()
    pushed = push_sha512_model(docker_registry, gguf)
    ref = f"{docker_registry.host}/{REPO}:{TAG}"

    doc = json.loads(ok(modelctl("pull", "--json", ref)))["models"][0]
    assert doc["digest"] == pushed.sha256  # pulled by tag: the manifest is named as the registry names it
    for digest in (pushed.layer, pushed.config):
        blob = sha512_blob(digest)
        assert blob.is_file() and of(blob.read_bytes(), "sha512") == digest
    assert not (store() / "blobs" / "sha256" / pushed.layer.removeprefix("sha512:")).exists()

    assert json.loads(ok(modelctl("inspect", ref)))  # local
    remote = json.loads(ok(modelctl("inspect", "--remote", ref)))
    assert pushed.layer in json.dumps(remote)
    assert Path(ok(modelctl("path", ref)).strip()).read_bytes() == gguf
    ok(modelctl("fit", "--remote", ref))

    archive = tmp_path / "m.tar"
    ok(modelctl("save", "-o", str(archive), ref))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert f"blobs/sha512/{pushed.layer.removeprefix('sha512:')}" in names
    other = tmp_path / "other-home"
    ok(modelctl("load", "-i", str(archive), home=other))
    assert sha512_blob(pushed.layer, other / "store").read_bytes() == gguf
    assert Path(ok(modelctl("path", ref, home=other)).strip()).read_bytes() == gguf

    # push: the sha512 blobs go up with ?digest=sha512:..., then a pull of the new name fetches them back
    copy = f"{docker_registry.host}/ai/copy512:2"
    ok(modelctl("tag", ref, copy, home=other))
    ok(modelctl("push", copy, home=other))
    head = httpx.head(f"{docker_registry.url}/v2/ai/copy512/blobs/{pushed.layer}", timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(gguf)
    third = tmp_path / "third-home"
    ok(modelctl("pull", "-q", copy, home=third))
    assert Path(ok(modelctl("path", copy, home=third)).strip()).read_bytes() == gguf

    ok(modelctl("rm", ref))
    ok(modelctl("prune"))  # nothing left to collect by name: rm deleted the sha512 blobs with the model
    assert not sha512_blob(pushed.layer).exists() and not sha512_blob(pushed.config).exists()


def test_pull_by_sha512_digest_then_lock_and_save(
    docker_registry: RegistryServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    gguf = tiny_gguf.read_bytes()
    pushed = push_sha512_model(docker_registry, gguf)
    with Sha512Manifests(docker_registry.host, {pushed.sha512: pushed.manifest}).running() as shim:
        pinned = f"{shim.host}/{REPO}@{pushed.sha512}"
        lock = tmp_path / "models.lock"
        doc = json.loads(ok(modelctl("pull", "--json", "--lock", str(lock), pinned)))["models"][0]
        assert doc["digest"] == pushed.sha512
        # the manifest fetched by its sha512 digest is stored under it, and verified with sha512
        assert sha512_blob(pushed.sha512).read_bytes() == pushed.manifest
        assert sha512_blob(pushed.layer).read_bytes() == gguf
        locked = json.loads(lock.read_text())["models"]
        assert [e["digest"] for e in locked] == [pushed.sha512]

        assert json.loads(ok(modelctl("inspect", "--remote", pinned)))
        ok(modelctl("fit", "--remote", pinned))
        assert json.loads(ok(modelctl("inspect", pinned)))
        assert Path(ok(modelctl("path", pinned)).strip()).read_bytes() == gguf

    # the shim is gone: a locked pull of a complete digest-pinned model needs no network
    ok(modelctl("pull", "-q", "--locked", str(lock)))

    archive = tmp_path / "pinned.tar"
    ok(modelctl("save", "-o", str(archive), pinned))
    other = tmp_path / "other-home"
    ok(modelctl("load", "-i", str(archive), home=other))
    assert sha512_blob(pushed.sha512, other / "store").read_bytes() == pushed.manifest
    assert Path(ok(modelctl("path", pinned, home=other)).strip()).read_bytes() == gguf
