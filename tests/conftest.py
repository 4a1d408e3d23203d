"""Hermetic tests: every test gets its own MODELCTL_HOME and DOCKER_CONFIG, and no stray proxy or modelctl setting.

``tests/`` is on ``sys.path`` (pytest imports this rootdir-less conftest with the default "prepend" mode), so
every test module can ``from helpers.<module> import ...``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
_CLEARED = (
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
    "SSL_CERT_DIR",
)


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a user has it, whoever started the run. A shell starts a background job (``make test &``, a CI
    runner's nohup) with SIGINT ignored, and an ignored signal stays ignored across exec: the interrupt tests would
    then send SIGINT to commands that never see it. A handled signal is reset to the default at exec, so every
    command a test starts gets Python's own KeyboardInterrupt again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MODELCTL_HOME=tmp_path/home, DOCKER_CONFIG=tmp_path/docker; every other MODELCTL_* and the HF, proxy and
    CA variables unset (monkeypatch restores them after the test)."""
    for name in [*_CLEARED, *(k for k in os.environ if k.startswith("MODELCTL_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (98 MB) that ``make setup`` caches; a failure, not a skip."""
    if not SMOLLM2.is_file() or SMOLLM2.stat().st_size < 1 << 20:
        pytest.fail(
            f"{SMOLLM2.relative_to(REPO_ROOT)} is missing: run make setup (make test does it) to fetch "
            "SmolLM2-135M-Instruct",
            pytrace=False,
        )
    return SMOLLM2


def home() -> Path:
    """The current test's MODELCTL_HOME."""
    return Path(os.environ["MODELCTL_HOME"])
