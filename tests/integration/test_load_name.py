"""``load --name`` with archives skopeo writes (issue 14 item 7): ``oci-archive:FILE:TAG`` names a tag only, and
``oci-archive:FILE`` names nothing; modelctl never guesses a repository for them (it once tagged
``docker.io/ai/TAG:latest``), the user gives it with ``--name``.

Real processes: ``modelctl package`` writes the model into a store (an OCI image layout), Debian's skopeo copies it
out of that layout into the archive, and ``modelctl load`` reads it back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers.cli import modelctl, one_line_error
from helpers.ggufs import sha256_file, tiny_llama

FULL = "docker.io/ai/tiny:1"


def skopeo(*args: str) -> None:
    done = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture()
def source(tmp_path: Path) -> tuple[Path, Path]:
    """A store holding the tiny model as ai/tiny:1, and the GGUF it was packaged from."""
    home, gguf = tmp_path / "source", tiny_llama(tmp_path / "tiny.gguf")
    done = modelctl("package", "ai/tiny:1", "--gguf", str(gguf), home=home)
    assert done.returncode == 0, done.stderr
    return home, gguf


def listed(home: Path) -> dict[str, str]:
    result = modelctl("list", "--json", home=home)
    assert result.returncode == 0, result.stderr
    return {m["reference"]: m["digest"] for m in json.loads(result.stdout)}


def model_file(home: Path, ref: str) -> Path:
    result = modelctl("path", ref, home=home)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.mark.parametrize(
    ("written", "says", "hint", "name", "expected"),
    [
        (":v1", "only by the tag 'v1'", "modelctl load --name REPOSITORY", "ai/tiny", "docker.io/ai/tiny:v1"),
        ("", "names no model", "modelctl load --name REPOSITORY:TAG", "ai/other:x", "docker.io/ai/other:x"),
    ],
    ids=["oci-archive:FILE:TAG", "oci-archive:FILE"],
)
def test_an_archive_without_a_repository_needs_a_name(
    source: tuple[Path, Path], tmp_path: Path, written: str, says: str, hint: str, name: str, expected: str
) -> None:
    home, gguf = source
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", "--quiet", f"oci:{home / 'store'}:{FULL}", f"oci-archive:{archive}{written}")
    target = tmp_path / "target"
    refused = modelctl("load", "-i", str(archive), home=target)
    one_line_error(refused, 2, says=says, hint=hint)
    assert listed(target) == {}  # neither docker.io/ai/v1:latest nor anything else
    loaded = modelctl("load", "--name", name, "-i", str(archive), home=target)
    assert loaded.returncode == 0, loaded.stderr
    assert f"loaded {expected}" in loaded.stdout
    assert listed(target) == {expected: listed(home)[FULL]}
    assert sha256_file(model_file(target, expected)) == sha256_file(gguf)
    renamed = modelctl("load", "--name", "registry.example:5000/team/tiny:prod", "-i", str(archive), home=target)
    assert renamed.returncode == 0, renamed.stderr
    assert "registry.example:5000/team/tiny:prod" in listed(target)


def test_a_full_name_still_loads_as_written_and_can_be_renamed(source: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = source
    archive = tmp_path / "full.tar"
    skopeo("copy", "--quiet", f"oci:{home / 'store'}:{FULL}", f"oci-archive:{archive}:example.org/team/tiny:v2")
    target = tmp_path / "target"
    assert modelctl("load", "-i", str(archive), home=target).returncode == 0
    assert modelctl("load", "--name", "ai/kept", "-i", str(archive), home=target).returncode == 0
    assert sorted(listed(target)) == ["docker.io/ai/kept:v2", "example.org/team/tiny:v2"]


def test_a_bad_name_is_refused_before_the_archive_is_read(tmp_path: Path) -> None:
    result = modelctl("load", "--name", "ai/x@sha256:" + "0" * 64, "-i", str(tmp_path / "absent.tar"))
    one_line_error(result, 2, says="a name cannot pin a digest")
