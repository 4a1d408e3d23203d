"""Non-distributable ("foreign") layers against Debian's docker-registry: a model manifest may list layers whose
blobs live only at their ``urls`` (OCI image spec; distribution accepts such a manifest without the blobs).

modelctl never fetches them: the pull takes the GGUF and the config only, the store counts the model complete
without the foreign blob, ``save``/``load`` and ``push`` carry the manifest unchanged, and a model whose *weights* are
only foreign is refused in one line that names where they are (never the URL's credentials or query).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from helpers.oci_layout import TINY_MODEL_CONFIG, digest_of
from helpers.servers import RegistryServer

from modelctl.oci import mediatypes as mt

FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
SECRET_URL = "https://user:hunter2@weights.example.invalid/models/x.tar.gz?X-Amz-Signature=s3cr3t"
GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64


def modelctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], capture_output=True, text=True, timeout=120, stdin=None
    )


def _put_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    done = client.put(str(httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})), content=data)
    assert done.status_code == 201, done.text
    return digest


def _push(registry: RegistryServer, repo: str, *, with_gguf: bool) -> dict[str, Any]:
    """Push config (+ GGUF) with raw HTTP, then a manifest that also lists a foreign layer never pushed."""
    client = httpx.Client(base_url=registry.url, timeout=30)
    config = _put_blob(client, repo, TINY_MODEL_CONFIG)
    foreign_data = b"foreign bytes that no registry holds"
    layers: list[dict[str, Any]] = [
        {"mediaType": FOREIGN, "digest": digest_of(foreign_data), "size": len(foreign_data), "urls": [SECRET_URL]}
    ]
    if with_gguf:
        layers.insert(
            0, {"mediaType": mt.DOCKER_GGUF, "digest": _put_blob(client, repo, GGUF_BYTES), "size": len(GGUF_BYTES)}
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config, "size": len(TINY_MODEL_CONFIG)},
        "layers": layers,
    }
    raw = json.dumps(manifest).encode()
    put = client.put(f"/v2/{repo}/manifests/1", content=raw, headers={"Content-Type": mt.OCI_MANIFEST})
    assert put.status_code == 201, put.text  # distribution takes the manifest without the foreign blob
    assert client.head(f"/v2/{repo}/blobs/{layers[-1]['digest']}").status_code == 404
    return manifest


def test_pull_skips_the_foreign_layer_and_the_model_is_complete(
    docker_registry: RegistryServer, tmp_path: Path
) -> None:
    manifest = _push(docker_registry, "ai/foreign", with_gguf=True)
    ref = f"{docker_registry.host}/ai/foreign:1"
    pulled = modelctl("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    store = Path(os.environ["MODELCTL_HOME"]) / "store" / "blobs" / "sha256"
    foreign_hex = manifest["layers"][1]["digest"].split(":")[1]
    assert not (store / foreign_hex).exists()
    assert (store / manifest["layers"][0]["digest"].split(":")[1]).read_bytes() == GGUF_BYTES

    again = modelctl("pull", ref)  # complete without the foreign blob: nothing to fetch
    assert again.returncode == 0, again.stderr
    path = modelctl("path", ref)
    assert path.returncode == 0, path.stderr
    assert Path(path.stdout.strip()).read_bytes() == GGUF_BYTES

    # save/load carry the manifest as is (an image layout may lack non-distributable blobs)
    archive = tmp_path / "m.tar"
    assert modelctl("save", ref, "-o", str(archive)).returncode == 0
    assert modelctl("rm", ref).returncode == 0
    loaded = modelctl("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr

    # push elsewhere: the registry gets the manifest and the GGUF, never a foreign upload
    target = f"{docker_registry.host}/team/foreign:copy"
    assert modelctl("tag", ref, target).returncode == 0
    pushed = modelctl("push", target)
    assert pushed.returncode == 0, pushed.stderr
    got = httpx.get(
        f"{docker_registry.url}/v2/team/foreign/manifests/copy", headers={"Accept": mt.OCI_MANIFEST}, timeout=30
    )
    assert got.status_code == 200 and json.loads(got.content) == manifest


def test_weights_only_at_a_foreign_url_are_refused_in_one_line(docker_registry: RegistryServer) -> None:
    _push(docker_registry, "ai/elsewhere", with_gguf=False)
    result = modelctl("pull", f"{docker_registry.host}/ai/elsewhere:1")
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "not in its registry" in lines[0]
    assert "https://weights.example.invalid/models/x.tar.gz" in lines[0]
    assert "hunter2" not in result.stderr and "s3cr3t" not in result.stderr
    listed = modelctl("list", "--json")
    assert listed.returncode == 0 and "elsewhere" not in listed.stdout
