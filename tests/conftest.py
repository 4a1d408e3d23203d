"""Hermetic tests: every test gets its own MODELCTL_HOME and DOCKER_CONFIG, and no stray proxy or modelctl setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelctl.config import ENV_VARS

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
_CLEARED = (
    *ENV_VARS,
    "HF_TOKEN",
    "HF_ENDPOINT",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    if not SMOLLM2.is_file():
        pytest.fail(f"{SMOLLM2} is missing: run `make setup` (make test does it) to fetch SmolLM2-135M-Instruct")
    return SMOLLM2


def home() -> Path:
    return Path(os.environ["MODELCTL_HOME"])
