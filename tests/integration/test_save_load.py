"""``modelctl save`` / ``load`` end to end: real CLI processes, the real SmolLM2 GGUF, skopeo as an independent
reader and writer of OCI layout archives (``oci-archive:``).

skopeo 1.9's plain ``inspect`` refuses non-image artifacts ("unsupported image-specific operation on artifact with
type ...model.config..."), for a model in a registry or a store as much as in an archive, so the archive is read
with ``inspect --raw`` (the manifest), ``inspect --config --raw`` and a full ``skopeo copy`` out of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.ggufs import sha256_file as sha256

from modelctl.oci import mediatypes as mt
from modelctl.store import Layout

REF = "ai/smollm2:135M-Q4_1"
FULL = "docker.io/ai/smollm2:135M-Q4_1"
CARD = "# SmolLM2 135M Instruct\n\nA small chat model (Apache-2.0).\n"


def modelctl(*args: str, home: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, MODELCTL_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=300,
    )


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, timeout=300)


def listed(home: Path) -> dict[str, dict[str, object]]:
    result = modelctl("list", "--json", home=home)
    assert result.returncode == 0, result.stderr
    return {m["reference"]: m for m in json.loads(result.stdout)}


def model_file(home: Path, ref: str) -> Path:
    result = modelctl("path", ref, home=home)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.decode().strip())


@pytest.fixture()
def source(tmp_path: Path, smollm2_gguf: Path) -> tuple[Path, str]:
    """A MODELCTL_HOME holding SmolLM2 (``modelctl package``) with a model card attached; and the model digest."""
    home = tmp_path / "source"
    card = tmp_path / "card.md"
    card.write_text(CARD)
    made = modelctl(
        "package", "--gguf", str(smollm2_gguf), "--created", "2025-01-01T00:00:00Z", "--card", str(card), REF, home=home
    )
    assert made.returncode == 0, made.stderr
    digest = listed(home)[FULL]["digest"]
    assert isinstance(digest, str)
    return home, digest


def test_save_skopeo_load_round_trip(source: tuple[Path, str], tmp_path: Path, smollm2_gguf: Path) -> None:
    home, digest = source
    archive = tmp_path / "models.tar"
    saved = modelctl("save", REF, "-o", str(archive), home=home)
    assert saved.returncode == 0, saved.stderr
    assert f"saved {FULL}" in saved.stdout.decode() and "1 attached" in saved.stdout.decode()

    raw = skopeo("inspect", "--raw", f"oci-archive:{archive}:{FULL}")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == digest, "skopeo reads the exact manifest bytes"
    config = skopeo("inspect", "--config", "--raw", f"oci-archive:{archive}:{FULL}")
    assert config.returncode == 0 and json.loads(config.stdout)["config"]["format"] == "gguf"
    copied = skopeo("copy", "--quiet", f"oci-archive:{archive}:{FULL}", f"oci:{tmp_path / 'skopeo-layout'}:x")
    assert copied.returncode == 0, copied.stderr  # skopeo verifies every blob it copies

    target = tmp_path / "target"
    loaded = modelctl("load", "-i", str(archive), "--json", home=target)
    assert loaded.returncode == 0, loaded.stderr
    doc = json.loads(loaded.stdout)
    assert [m["reference"] for m in doc["models"]] == [FULL] and doc["models"][0]["digest"] == digest
    assert doc["referrers"] == 1
    assert listed(target)[FULL]["digest"] == digest
    assert sha256(model_file(target, REF)) == sha256(smollm2_gguf)

    store = Layout(target / "store")
    cards = store.referrers(digest)
    assert [c.artifact_type for c in cards] == [mt.MODEL_CARD_ARTIFACT], "the card survives the round trip"
    card_manifest = json.loads(store.read_blob(cards[0].digest))
    assert store.read_blob(card_manifest["layers"][0]["digest"]).decode() == CARD

    again = modelctl("load", "-i", str(archive), home=target)
    assert again.returncode == 0 and b"(0 new)" in again.stdout, "loading twice changes nothing"


def test_save_to_stdout_piped_into_load(source: tuple[Path, str], tmp_path: Path, smollm2_gguf: Path) -> None:
    home, digest = source
    target = tmp_path / "piped"
    env = dict(os.environ, MODELCTL_HOME=str(home))
    save = subprocess.Popen(
        [sys.executable, "-m", "modelctl", "save", REF, "-o", "-"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    load = subprocess.run(
        [sys.executable, "-m", "modelctl", "load"],
        env=dict(os.environ, MODELCTL_HOME=str(target)),
        stdin=save.stdout,
        capture_output=True,
        timeout=300,
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait(60) == 0, save.stderr.read() if save.stderr else ""
    assert save.stderr is not None and f"saved {FULL}".encode() in save.stderr.read()
    assert load.returncode == 0, load.stderr
    assert f"loaded {FULL}".encode() in load.stdout
    assert listed(target)[FULL]["digest"] == digest
    assert sha256(model_file(target, REF)) == sha256(smollm2_gguf)


def test_skopeo_written_archive_loads(source: tuple[Path, str], tmp_path: Path, smollm2_gguf: Path) -> None:
    home, digest = source
    archive = tmp_path / "skopeo.tar"
    other = "registry.example.org/team/smollm2:v1"
    copied = skopeo("copy", "--quiet", f"oci:{home / 'store'}:{FULL}", f"oci-archive:{archive}:{other}")
    assert copied.returncode == 0, copied.stderr
    target = tmp_path / "target"
    loaded = modelctl("load", "-i", str(archive), home=target)
    assert loaded.returncode == 0, loaded.stderr
    assert f"loaded {other}".encode() in loaded.stdout
    assert listed(target)[other]["digest"] == digest
    assert sha256(model_file(target, other)) == sha256(smollm2_gguf)


def test_corrupt_archive_is_refused_and_loads_nothing(source: tuple[Path, str], tmp_path: Path) -> None:
    home, _ = source
    archive = tmp_path / "models.tar"
    assert modelctl("save", REF, "-o", str(archive), home=home).returncode == 0
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2  # inside the 98 MB GGUF layer
    data[middle] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = tmp_path / "target"
    result = modelctl("load", "-i", str(archive), home=target)
    assert result.returncode == 5
    stderr = result.stderr.decode()
    assert stderr.startswith("modelctl: error: digest mismatch") and stderr.count("\n") == 1, stderr
    assert listed(target) == {}
    assert list((target / "store" / "blobs" / "sha256").iterdir()) == []
    assert [p for p in (target / "store" / ".tmp").iterdir() if p.name.startswith("load.")] == []

    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(archive.read_bytes()[: len(data) // 3])
    cut = modelctl("load", "-i", str(truncated), home=target)
    assert cut.returncode == 5 and b"truncated" in cut.stderr and cut.stderr.count(b"\n") == 1
    assert listed(target) == {}

    missing = modelctl("load", "-i", str(tmp_path / "absent.tar"), home=target)
    assert missing.returncode == 3
