"""Config: every environment variable is read in one place and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.config import Config, from_env, parse_mirrors
from modelctl.errors import UsageError


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = from_env(
        {"MODELCTL_HOME": str(tmp_path), "MODELCTL_PARTS": "4", "DOCKER_CONFIG": str(tmp_path / "d")}
    )
    assert cfg.home == tmp_path
    assert cfg.store_dir == tmp_path / "store"
    assert cfg.ingest_dir == tmp_path / "ingest"
    assert cfg.parts == 4
    assert cfg.docker_config == tmp_path / "d"


def test_mirrors() -> None:
    assert parse_mirrors("docker.io=http://127.0.0.1:5050/, docker.io=https://m2,ghcr.io=https://g") == {
        "docker.io": ("http://127.0.0.1:5050", "https://m2"),
        "ghcr.io": ("https://g",),
    }
    with pytest.raises(UsageError, match="MODELCTL_MIRRORS"):
        parse_mirrors("docker.io")
    with pytest.raises(UsageError):
        parse_mirrors("docker.io=ftp://x")


@pytest.mark.parametrize("value", ["x", "0", "1000"])
def test_bad_numbers_are_usage_errors(value: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="MODELCTL_PARTS"):
        from_env({"MODELCTL_HOME": str(tmp_path), "MODELCTL_PARTS": value})


@pytest.mark.parametrize(
    ("registry", "insecure"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.local:5000", True),
        ("ghcr.io", False),
        ("docker.io", False),
        ("127.example.com", False),
    ],
)
def test_plain_http_only_for_loopback_and_listed(registry: str, insecure: bool, tmp_path: Path) -> None:
    cfg = Config(home=tmp_path, insecure_registries=frozenset({"registry.local:5000"}))
    assert cfg.is_insecure(registry) is insecure


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_a_home_on_a_file_is_a_usage_error(tmp_path: Path, below: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    home = afile / below if below else afile
    with pytest.raises(UsageError, match=f"MODELCTL_HOME={home} is not a directory"):
        from_env({"MODELCTL_HOME": str(home)})
    assert from_env({"MODELCTL_HOME": str(tmp_path / "new" / "home")}).home == tmp_path / "new" / "home"
