"""package -> push to our registry -> pull as another user; lockfiles. Real registry process, real CLI processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import servers


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    host: str
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(root: Path) -> Served:
    """``modelctl registry serve`` on a free port (``:0``); the listening line says which."""
    proc, url, _ = servers.start_ours(root, via=("-m", "modelctl", "registry", "serve"))
    return Served(proc, url.removeprefix("http://"), root)


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[Served]:
    server = start(tmp_path / "registry")
    yield server
    server.stop()


def modelctl(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, MODELCTL_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=full, capture_output=True, text=True, timeout=300
    )


def test_package_push_pull_lock(ours: Served, tmp_path: Path, smollm2_gguf: Path, repo_root: Path) -> None:
    publisher, user = tmp_path / "publisher", tmp_path / "user"
    name = f"{ours.host}/ai/smollm2"
    made = modelctl(
        "package",
        "--gguf",
        str(smollm2_gguf),
        "--context-size",
        "8192",
        "--created",
        "2025-01-01T00:00:00Z",
        "--card",
        str(repo_root / "cards" / "ai" / "smollm2.md"),
        f"{name}:135M-Q4_1",
        f"{name}:latest",
        home=publisher,
    )
    assert made.returncode == 0, made.stderr
    again = modelctl(
        "package",
        "--gguf",
        str(smollm2_gguf),
        "--context-size",
        "8192",
        "--created",
        "2025-01-01T00:00:00Z",
        f"{name}:copy",
        home=tmp_path / "other",
    )
    digest = re.search(r"sha256:[0-9a-f]{64}", made.stdout)
    assert digest and digest.group(0) in again.stdout, "packaging is deterministic"

    inspected = json.loads(modelctl("inspect", f"{name}:latest", home=publisher).stdout)
    cfg = inspected["config"]["config"]
    assert cfg["format"] == "gguf" and cfg["architecture"] == "llama" and cfg["context_size"] == 8192
    assert cfg["quantization"] and cfg["parameters"] and all(isinstance(v, str) for v in cfg["gguf"].values())

    pushed = modelctl("push", f"{name}:135M-Q4_1", home=publisher)
    assert pushed.returncode == 0, pushed.stderr
    referrers = httpx.get(f"http://{ours.host}/v2/ai/smollm2/referrers/{digest.group(0)}").json()["manifests"]
    assert [r["artifactType"] for r in referrers] == ["application/vnd.modelctl.card.v1"], "the card travels along"
    second = modelctl("push", f"{name}:latest", home=publisher)
    assert "uploaded 0" in second.stdout, "blobs already there are skipped"

    # the fit check judges the load run will make: the packaged context (8192), not the generic 4096 default
    remote_fit = json.loads(modelctl("fit", "--json", f"{name}:latest", home=user).stdout)
    assert remote_fit["settings"]["ctx_size"] == 8192 and remote_fit["bytes_fetched"] > 0

    lock = tmp_path / "models.lock"
    pulled = modelctl("pull", "--json", "--lock", str(lock), f"{name}:latest", home=user)
    assert pulled.returncode == 0, pulled.stderr
    local_fit = json.loads(modelctl("fit", "--json", f"{name}:latest", home=user).stdout)
    assert local_fit["settings"]["ctx_size"] == 8192 and local_fit["bytes_fetched"] == 0
    asked = json.loads(modelctl("fit", "--json", "--ctx-size", "1024", f"{name}:latest", home=user).stdout)
    assert asked["settings"]["ctx_size"] == 1024
    doc = json.loads(pulled.stdout)["models"][0]
    assert doc["digest"] == digest.group(0)
    model_bytes = smollm2_gguf.read_bytes()
    assert hashlib.sha256(Path(doc["files"][0]).read_bytes()).digest() == hashlib.sha256(model_bytes).digest()
    entries = json.loads(lock.read_text())["models"]
    assert entries == [{"reference": f"{name}:latest", "digest": digest.group(0)}]

    ours.stop()  # a locked pull of present models needs no network at all
    offline = modelctl("pull", "--locked", str(lock), home=user)
    assert offline.returncode == 0, offline.stderr

    gone = modelctl("pull", "--locked", str(lock), home=tmp_path / "fresh", MODELCTL_RETRIES="0")
    assert gone.returncode == 7 and gone.stderr.startswith("modelctl: error:") and gone.stderr.count("\n") == 1


def test_locked_digest_missing_is_a_clear_error(ours: Served, tmp_path: Path) -> None:
    lock = tmp_path / "models.lock"
    missing = "sha256:" + "0" * 64
    lock.write_text(json.dumps({"version": 1, "models": [{"reference": f"{ours.host}/ai/x:1", "digest": missing}]}))
    result = modelctl("pull", "--locked", str(lock), home=tmp_path / "home")
    assert result.returncode == 3
    assert missing in result.stderr and "Traceback" not in result.stderr


def test_bad_lockfile(tmp_path: Path) -> None:
    lock = tmp_path / "models.lock"
    lock.write_text("not json")
    result = modelctl("pull", "--locked", str(lock), home=tmp_path / "home")
    assert result.returncode == 5 and "not a modelctl lockfile" in result.stderr
