"""``modelctl pull`` as a real process, and the checks every fault and kill test ends with: the error is one line
with the documented exit code and a hint, and the store is consistent (``index.json`` parses, no file in
``blobs/`` differs from its name, every tagged model's blobs are there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.ggufs import sha256_file

ERROR_PREFIX = "modelctl: error: "


def home() -> Path:
    """The current test's MODELCTL_HOME (``tests/conftest.py`` sets one per test)."""
    return Path(os.environ["MODELCTL_HOME"])


def pull_command(ref: str) -> list[str]:
    return [sys.executable, "-m", "modelctl", "pull", "-q", ref]


def pull(ref: str, *, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``modelctl pull -q REF`` with extra environment variables (``MODELCTL_STALL_TIMEOUT="2"`` ...)."""
    return subprocess.run(
        pull_command(ref), env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert exit ``code`` with one ``modelctl: error: MESSAGE: HINT`` line and no traceback; return the line."""
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "Traceback" not in result.stderr
    message = lines[0].removeprefix(ERROR_PREFIX)
    assert ": " in message, f"no hint in {message!r}"
    return message


def store_is_consistent() -> dict[str, str]:
    """Check the store and return its tags (reference -> manifest digest).

    Every file in ``blobs/<algorithm>/`` hashes to its name (sha256 here; the tests pull nothing else), and every
    tagged manifest's config and layers are present."""
    store = home() / "store"
    index = json.loads((store / "index.json").read_text())
    blobs = store / "blobs" / "sha256"
    present = set()
    for blob in blobs.iterdir() if blobs.is_dir() else ():
        assert sha256_file(blob) == f"sha256:{blob.name}", f"{blob} does not hold what its name says"
        present.add(blob.name)
    tags = {}
    for entry in index["manifests"]:
        digest = entry["digest"]
        assert digest.removeprefix("sha256:") in present, f"tagged manifest {digest} is missing"
        manifest = json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())
        for desc in [manifest["config"], *manifest["layers"]]:
            assert desc["digest"].removeprefix("sha256:") in present, f"{desc['digest']} of {digest} is missing"
        tags[entry["annotations"]["org.opencontainers.image.ref.name"]] = digest
    return tags
