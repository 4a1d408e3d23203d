"""The small failures of issue 14 "Why" 7, each through the real CLI against real registries: refused up front in
one line with the documented exit code and a hint that fits the case.

pull --lock into a missing directory, save -o DIR, package --created notadate, port 99999, a model without a GGUF
layer, MODELCTL_HOME on a file, a wrong password at login, a damaged local blob at push, a mistyped command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import Run, modelctl, one_line_error
from helpers.ggufs import tiny_llama
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.servers import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"


def packaged(home: Path, tmp_path: Path, ref: str) -> Path:
    """``modelctl package`` of a tiny GGUF as ``ref`` into ``home``; returns the GGUF."""
    gguf = tiny_llama(tmp_path / "tiny.gguf")
    done = modelctl("package", ref, "--gguf", str(gguf), home=home)
    assert done.returncode == 0, done.stderr
    return gguf


def blob_files(home: Path) -> list[Path]:
    blobs = home / "store" / "blobs"
    return sorted(p for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []


def listed(home: Path) -> list[str]:
    result = modelctl("list", "--json", home=home)
    assert result.returncode == 0, result.stderr
    return [m["reference"] for m in json.loads(result.stdout)]


@pytest.fixture()
def pushed(docker_registry: RegistryServer, layout: OCILayout, tiny_gguf: Path) -> str:
    """A tiny Docker model on the anonymous docker-registry; its reference."""
    docker_v01_artifact(layout, "1", [tiny_gguf])
    return push_layout(layout, "1", docker_registry, "ai/tiny:1").reference


def test_pull_lock_into_a_missing_directory_fails_before_downloading(pushed: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = modelctl("pull", "--lock", str(tmp_path / "missing" / "dir" / "x.lock"), pushed, home=home)
    one_line_error(result, 2, says=f"lockfile directory {tmp_path / 'missing' / 'dir'} does not exist")
    assert blob_files(home) == [] and not (home / "ingest").exists()
    directory = modelctl("pull", "--lock", str(tmp_path), pushed, home=home)
    one_line_error(directory, 2, says="is a directory")
    assert blob_files(home) == []
    ok = modelctl("pull", "--lock", str(tmp_path / "models.lock"), pushed, home=home)  # the fix works
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["reference"] == pushed


def test_save_to_a_directory_fails_up_front(tmp_path: Path) -> None:
    home = tmp_path / "home"
    packaged(home, tmp_path, "ai/tiny:1")
    out = tmp_path / "out"
    out.mkdir()
    result = modelctl("save", "ai/tiny:1", "-o", str(out), home=home)
    one_line_error(result, 2, says=f"{out} is a directory", hint="give -o a file name")
    assert list(out.iterdir()) == [] and list(tmp_path.glob(".*tmp*")) == []


@pytest.mark.parametrize("created", ["notadate", "2025-01-01", "2025-02-30T00:00:00Z", "yesterday"])
def test_package_created_must_be_rfc3339(tmp_path: Path, created: str) -> None:
    home = tmp_path / "home"
    gguf = tiny_llama(tmp_path / "tiny.gguf")
    result = modelctl("package", "ai/tiny:1", "--gguf", str(gguf), "--created", created, home=home)
    one_line_error(result, 2, says="is not an RFC 3339 time", hint="2025-01-31T12:00:00Z")
    assert blob_files(home) == []  # refused before the GGUF was copied
    ok = modelctl("package", "ai/tiny:1", "--gguf", str(gguf), "--created", "2025-01-31T12:00:00+02:00", home=home)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("pull", "localhost:99999/ai/x:1"),
        ("inspect", "--remote", "127.0.0.1:99999/ai/x:1"),
        ("pull", "localhost:0/ai/x:1"),
        ("login", "localhost:99999", "-u", "alice", "--password-stdin"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = modelctl(*args, home=tmp_path / "home", stdin="a-password\n")
    one_line_error(result, 2, says="is out of range", hint="ports are 1-65535")
    assert "connection refused" not in result.stderr.lower()


@pytest.mark.parametrize("extra", [[], ["license"]], ids=["no-layers", "license-only"])
def test_a_model_without_a_gguf_layer_is_refused_at_pull(
    docker_registry: RegistryServer, layout: OCILayout, tmp_path: Path, extra: list[str]
) -> None:
    config = layout.add_bytes(json.dumps({"config": {"format": "gguf"}}).encode(), DOCKER_CONFIG)
    layers = [layout.add_bytes(b"MIT License\n", "application/vnd.docker.ai.license") for _ in extra]
    layout.add_manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}, "1")
    ref = push_layout(layout, "1", docker_registry, "ai/empty:1").reference
    home = tmp_path / "home"
    result = modelctl("pull", ref, home=home)
    one_line_error(result, 5, says="has no GGUF layer", hint="nothing was downloaded or tagged")
    assert listed(home) == []


@pytest.mark.parametrize("inside", [False, True], ids=["home-is-a-file", "home-under-a-file"])
def test_modelctl_home_on_a_file(tmp_path: Path, inside: bool) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    home = afile / "sub" if inside else afile
    for args in (("list",), ("pull", "localhost:5000/ai/x:1"), ("path", "ai/x:1")):
        result = modelctl(*args, home=home)
        one_line_error(result, 2, says=f"MODELCTL_HOME={home} is not a directory", hint="point MODELCTL_HOME at")
    assert afile.read_text() == "not a directory\n"


def test_a_wrong_password_at_login_is_not_told_to_log_in(docker_registry_htpasswd: RegistryServer) -> None:
    result = login(docker_registry_htpasswd, docker_registry_htpasswd.username or "", "wrong-password")
    line = one_line_error(result, 4, hint="check the user name (alice) and the password or access token")
    assert "modelctl login" not in line
    assert login(docker_registry_htpasswd, "mallory", docker_registry_htpasswd.password or "").returncode == 4
    good = login(docker_registry_htpasswd, docker_registry_htpasswd.username or "", docker_registry_htpasswd.password)
    assert good.returncode == 0, good.stderr


def login(registry: RegistryServer, user: str, password: str | None) -> Run:
    return modelctl("login", registry.host, "-u", user, "--password-stdin", stdin=f"{password}\n")


def test_a_damaged_local_blob_at_push_points_to_verify(docker_registry: RegistryServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ref = f"{docker_registry.host}/ai/tiny:1"
    gguf = packaged(home, tmp_path, ref)
    size = gguf.stat().st_size
    stored = next(p for p in blob_files(home) if p.stat().st_size == size)
    data = bytearray(stored.read_bytes())
    data[size // 2] ^= 0xFF
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    result = modelctl("push", ref, home=home)
    line = one_line_error(result, 5, says="is damaged", hint=f"modelctl verify --repair {ref}", progress=True)
    assert "pull again" not in line and "download" not in line


def test_a_mistyped_command_suggests_once(tmp_path: Path) -> None:
    result = modelctl("pul", "ai/x", home=tmp_path / "home")
    line = one_line_error(result, 2, says="No such command 'pul'")
    assert line.count("Did you mean") == 1 and "'pull'" in line

