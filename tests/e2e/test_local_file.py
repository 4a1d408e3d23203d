"""``run`` and ``serve`` of a GGUF file named by its path (the real SmolLM2-135M file): loaded in place, never
copied into the store or changed, and not listed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e.conftest import SMOLLM2, clean_env

Runner = Callable[..., subprocess.CompletedProcess[str]]
FAST = ("--ctx-size", "1024", "--threads", "2")


def _fingerprint(path: Path) -> tuple[str, int, int]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = os.stat(path)
    return digest, info.st_size, info.st_mtime_ns


@pytest.fixture()
def empty_home(tmp_path: Path) -> dict[str, str]:
    """An environment whose MODELCTL_HOME holds nothing: a pull would be needed for any reference."""
    if not SMOLLM2.is_file():
        pytest.fail(f"{SMOLLM2} is missing: run make setup")
    return clean_env(tmp_path / "home")


def test_run_a_local_file(modelctl: Runner, empty_home: dict[str, str], tmp_path: Path) -> None:
    before = _fingerprint(SMOLLM2)
    relative = os.path.relpath(SMOLLM2, Path(__file__).resolve().parents[2])  # modelctl runs in the repo root
    question = ("What is the capital of France?", "--temperature", "0", "--system", "Answer in one short sentence.")
    result = modelctl("run", f"./{relative}", *question, *FAST, env=empty_home)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert _fingerprint(SMOLLM2) == before
    assert not (tmp_path / "home").exists()  # nothing stored, no store created
    listed = modelctl("list", "--quiet", env=empty_home)
    assert listed.returncode == 0 and listed.stdout == ""


def test_serve_a_local_file(command: list[str], empty_home: dict[str, str], port: int, tmp_path: Path) -> None:
    log = (tmp_path / "serve.log").open("w+")
    args = ["serve", f"file://{SMOLLM2}", "--port", str(port), *FAST]
    proc = subprocess.Popen([*command, *args], env=empty_home, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "modelctl serve did not answer within 120 s"
            time.sleep(0.2)
        assert [m["id"] for m in answer.json()["data"]] == [SMOLLM2.name]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
