"""``modelctl pull REF --output DIR`` (a real process) against Debian's docker-registry: the model's files in DIR under
their annotated names, hard links to the store's blobs, no network when the model is present, names that would
escape DIR refused before anything is written, and copies (verified) where a hard link is impossible."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import oci_layout, servers
from helpers.ggufs import sha256_file
from helpers.oci_layout import CREATED, DOCKER_GGUF, DOCKER_MODEL_CONFIG_V01, FILEPATH, OCI_MANIFEST, OCILayout
from helpers.pulls import home, one_line_error, store_is_consistent
from helpers.servers import RegistryServer

from modelctl import config as _config
from modelctl.services import output

REPO = "ai/out:1"
LICENSE = b"Apache-2.0\n"


def modelctl(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelctl", *args]
    return subprocess.run(command, env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout)


def blob(digest: str) -> Path:
    return home() / "store" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def annotated_model(layout: OCILayout, gguf: Path, name: str) -> dict[str, str]:
    """A Docker v0.1 model whose GGUF layer is annotated ``name`` (and a LICENSE); {file name: layer digest}."""
    weights = layout.add_file(gguf, DOCKER_GGUF, {FILEPATH: name})
    license = layout.add_bytes(LICENSE, "application/vnd.docker.ai.license", {FILEPATH: "LICENSE"})
    config = {
        "config": {"format": "gguf", "quantization": "F32", "parameters": "1M", "architecture": "llama"},
        "descriptor": {"created": CREATED},
        "rootfs": {"type": "rootfs", "diff_ids": [weights["digest"], license["digest"]]},
    }
    config_desc = layout.add_bytes(json.dumps(config).encode(), DOCKER_MODEL_CONFIG_V01)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [weights, license]}
    layout.add_manifest(manifest, "1")
    return {name: weights["digest"], "LICENSE": license["digest"]}


@pytest.fixture()
def files(layout: OCILayout, tiny_gguf: Path, docker_registry: RegistryServer) -> dict[str, str]:
    found = annotated_model(layout, tiny_gguf, "weights/tiny-llama.gguf")
    oci_layout.push_layout(layout, "1", docker_registry, REPO)
    return found


def test_files_are_hard_links_to_the_store_named_by_their_annotations(
    tmp_path: Path, docker_registry: RegistryServer, files: dict[str, str]
) -> None:
    out = tmp_path / "models"
    result = modelctl("pull", "--json", f"{docker_registry.host}/{REPO}", "--output", str(out))
    assert result.returncode == 0, result.stderr
    placed = json.loads(result.stdout)["models"][0]["output"]
    assert placed == {
        "directory": str(out),
        "files": [str(out / "weights" / "tiny-llama.gguf"), str(out / "LICENSE")],
        "linked": 2,
    }
    for name, digest in files.items():
        assert (out / name).stat().st_ino == blob(digest).stat().st_ino, f"{name} is not the store's blob"
        assert sha256_file(out / name) == digest
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(files)


def test_a_present_model_needs_no_network(tmp_path: Path, layout: OCILayout, tiny_gguf: Path) -> None:
    """Pulled once, then the registry stops: ``--output`` still places the files; a plain pull of the tag (which
    asks the registry whether it moved) fails, so the first one truly did not ask."""
    found = annotated_model(layout, tiny_gguf, "tiny-llama.gguf")
    with servers.docker_registry(tmp_path / "registry") as registry:
        oci_layout.push_layout(layout, "1", registry, REPO)
        ref = f"{registry.host}/{REPO}"
        assert modelctl("pull", "-q", ref).returncode == 0
    out = tmp_path / "offline"
    result = modelctl("pull", ref, "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 files in" in result.stdout and "(2 hard links, 0 copies)" in result.stdout
    assert (out / "tiny-llama.gguf").stat().st_ino == blob(found["tiny-llama.gguf"]).stat().st_ino
    one_line_error(modelctl("pull", "-q", ref, MODELCTL_RETRIES="0"), 7)


@pytest.mark.parametrize("how", ["dotdot", "symlinked-directory"])
def test_names_that_escape_are_refused_before_anything_is_written(
    tmp_path: Path, layout: OCILayout, tiny_gguf: Path, docker_registry: RegistryServer, how: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "models"
    out.mkdir()
    if how == "dotdot":
        annotated_model(layout, tiny_gguf, "../outside/tiny-llama.gguf")
    else:
        annotated_model(layout, tiny_gguf, "weights/tiny-llama.gguf")
        (out / "weights").symlink_to(outside, target_is_directory=True)
    oci_layout.push_layout(layout, "1", docker_registry, REPO)
    message = one_line_error(modelctl("pull", "-q", f"{docker_registry.host}/{REPO}", "--output", str(out)), 5)
    print(message)
    assert "outside" in message or ".." in message
    assert list(outside.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ([] if how == "dotdot" else ["weights"])


def test_usage_errors_come_before_the_download(tmp_path: Path, docker_registry: RegistryServer) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    ref = f"{docker_registry.host}/{REPO}"
    message = one_line_error(modelctl("pull", "-q", ref, "--output", str(a_file / "sub")), 2)
    assert f"{a_file} is not a directory" in message
    message = one_line_error(modelctl("pull", "-q", ref, f"{ref}-b", "--output", str(tmp_path / "o")), 2)
    assert "--output takes one model" in message
    assert not (home() / "store" / "blobs").exists() or store_is_consistent() == {}


def test_copies_where_hard_links_are_impossible(
    tmp_path: Path, docker_registry: RegistryServer, files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file system (EXDEV, made so here by refusing ``os.link``): each file is a copy, checked against its
    digest as it is written, and a damaged blob in the store is refused instead of copied."""
    ref = f"{docker_registry.host}/{REPO}"
    result = modelctl("pull", "-q", ref)
    assert result.returncode == 0, result.stderr

    def no_links(src: object, dst: object, **kw: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    config = _config.from_env()
    digest = store_is_consistent()[ref]
    placed = output.place(config, ref, digest, tmp_path / "copies")  # type: ignore[arg-type]
    assert placed.linked == 0 and len(placed.files) == 2
    for name, layer in files.items():
        copy = tmp_path / "copies" / name
        assert copy.stat().st_ino != blob(layer).stat().st_ino and sha256_file(copy) == layer
    gguf = blob(files["weights/tiny-llama.gguf"])
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0xFF
    gguf.write_bytes(bytes(data))
    with pytest.raises(Exception, match="verify --repair") as caught:
        output.place(config, ref, digest, tmp_path / "damaged")  # type: ignore[arg-type]
    assert type(caught.value).__name__ == "IntegrityError"
    assert not (tmp_path / "damaged" / "weights" / "tiny-llama.gguf").exists()
