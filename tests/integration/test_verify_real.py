"""``modelctl verify`` and the always-on size checks end to end: a model pulled from Debian's docker-registry, its
stored GGUF damaged on disk, then real CLI processes find it, repair it from the registry, or (registry stopped)
remove it and say which model is incomplete; ``pull`` and ``run`` notice a wrong size without being asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import servers
from helpers.ggufs import sha256_file
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.servers import RegistryServer

REPO_TAG = "ai/tiny:1"


def modelctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def publish_and_pull(registry: RegistryServer, layout: OCILayout, gguf: Path) -> tuple[str, str, Path]:
    """Push a one-GGUF model to ``registry`` with skopeo, pull it with modelctl; its reference, the GGUF layer's
    digest, and the stored blob's path."""
    docker_v01_artifact(layout, "tiny", [gguf])
    pushed = push_layout(layout, "tiny", registry, REPO_TAG)
    pulled = modelctl("pull", pushed.reference)
    assert pulled.returncode == 0, pulled.stderr
    layer = sha256_file(gguf)
    blob = stored(layer)
    assert blob.is_file()
    return pushed.reference, layer, blob


def stored(digest: str) -> Path:
    return Path(os.environ["MODELCTL_HOME"]) / "store" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def flip16(path: Path) -> None:
    """Invert 16 bytes in the middle of the file: same size, different content."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        data = f.read(16)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))


def test_verify_finds_flipped_bytes_and_repair_fetches_them_again(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    ref, layer, blob = publish_and_pull(docker_registry, layout, tiny_gguf)
    assert modelctl("verify").returncode == 0
    flip16(blob)

    found = modelctl("verify")
    assert found.returncode == 5, found.stderr
    line = next(x for x in found.stdout.splitlines() if x.startswith("damaged "))
    assert layer in line and ref in line
    assert found.stderr.count("\n") == 1 and f"modelctl verify --repair {ref}" in found.stderr

    as_json = modelctl("verify", "--json", ref)
    assert as_json.returncode == 5
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and doc["repair"] is None
    assert doc["checked"]["blobs"] == 3  # manifest, config, GGUF
    assert [(d["digest"], d["problem"], d["models"]) for d in doc["damaged"]] == [(layer, "digest", [f"{ref}"])]
    assert doc["damaged"][0]["path"] == str(blob) and doc["damaged"][0]["actual_digest"] != layer
    assert doc["damaged"][0]["expected_size"] == doc["damaged"][0]["actual_size"] == tiny_gguf.stat().st_size

    repaired = modelctl("verify", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["ok"] is True
    assert report["repair"] == {"removed": [layer], "restored": [ref], "incomplete": []}
    assert sha256_file(blob) == layer
    assert modelctl("verify").returncode == 0

    flip16(blob)  # pull sees only sizes unless asked to re-hash
    assert modelctl("pull", ref).returncode == 0 and sha256_file(blob) != layer
    again = modelctl("pull", "--verify", ref)
    assert again.returncode == 0, again.stderr
    assert f"the local copy of blob {layer} is damaged" in again.stderr
    assert sha256_file(blob) == layer


def test_repair_restores_a_damaged_manifest_from_the_registry(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    ref, _, _ = publish_and_pull(docker_registry, layout, tiny_gguf)
    manifest = json.loads(modelctl("list", "--json").stdout)[0]["digest"]
    flip16(stored(manifest))

    found = modelctl("verify", "--json", ref)
    assert found.returncode == 5
    assert [(d["digest"], d["models"]) for d in json.loads(found.stdout)["damaged"]] == [(manifest, [ref])]
    listed = modelctl("list", "--json")  # one damaged model is shown as such, not a failed list
    assert listed.returncode == 0, listed.stderr
    assert [(m["reference"], m["format"]) for m in json.loads(listed.stdout)] == [(ref, "damaged")]
    assert "damaged: modelctl verify --repair" in modelctl("list").stdout
    repaired = modelctl("verify", "--repair", ref)
    assert repaired.returncode == 0, repaired.stderr
    assert f"restored {ref}" in repaired.stdout
    assert sha256_file(stored(manifest)) == manifest
    assert modelctl("verify").returncode == 0


def test_repair_with_the_registry_stopped_removes_the_blob_and_says_so(
    tmp_path: Path, layout: OCILayout, tiny_gguf: Path
) -> None:
    with servers.docker_registry(tmp_path / "registry") as registry:
        ref, layer, blob = publish_and_pull(registry, layout, tiny_gguf)
    flip16(blob)  # the registry is stopped now

    offline = modelctl("verify", "--repair", MODELCTL_RETRIES="0")
    assert offline.returncode == 7, offline.stderr
    out = offline.stdout
    assert f"removed damaged blob {layer}" in out
    assert f"incomplete {ref} (its damaged blobs are removed; it stays listed)" in out
    assert f"to get {ref} back, once its registry is reachable, run: modelctl verify --repair {ref}" in out
    assert offline.stderr.startswith("modelctl: error: 1 model(s) incomplete after the repair")
    assert not blob.exists()

    listed = modelctl("list", "--json")
    assert listed.returncode == 0 and [m["reference"] for m in json.loads(listed.stdout)] == [ref]
    missing = modelctl("verify", "--json")
    assert missing.returncode == 5
    assert [(d["digest"], d["problem"]) for d in json.loads(missing.stdout)["damaged"]] == [(layer, "missing")]


def test_run_refuses_a_truncated_blob_and_pull_fetches_it_again(
    docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path
) -> None:
    ref, layer, blob = publish_and_pull(docker_registry, layout, tiny_gguf)
    os.truncate(blob, blob.stat().st_size // 2)

    refused = modelctl("run", "--no-pull", ref, "hello")
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.count("\n") == 1  # one line, before any model load (llama.cpp logs nothing)
    assert layer in refused.stderr and f"run: modelctl verify --repair {ref}" in refused.stderr
    assert "bytes" in refused.stderr and "expected" in refused.stderr

    pulled = modelctl("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert f"the local copy of blob {layer} is damaged" in pulled.stderr
    assert sha256_file(blob) == layer
