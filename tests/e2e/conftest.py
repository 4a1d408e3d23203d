"""End-to-end fixtures: a store holding the real SmolLM2-135M GGUF, and a way to run the real ``modelctl``.

The store is written the way a pull leaves it: a Docker v0.1 model artifact (OCI manifest, model config, one
``application/vnd.docker.ai.gguf.v3`` layer) tagged ``docker.io/ai/smollm2:135M-Q4_1`` in an OCI layout.
Every test runs ``modelctl`` as a subprocess, with ``MODELCTL_HOME`` pointing at that store and no other
modelctl settings from the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
REF = "ai/smollm2:135M-Q4_1"
FULL_REF = "docker.io/ai/smollm2:135M-Q4_1"
MODELCTL = [sys.executable, "-m", "modelctl"]


def write_model(store: Layout, gguf: Path, name: str, *, context_size: int | None = None) -> str:
    """Put ``gguf`` into ``store`` as a Docker v0.1 model artifact tagged ``name``; return the manifest digest."""
    store.ensure()
    sha = hashlib.sha256()
    with gguf.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    layer_digest = f"sha256:{sha.hexdigest()}"
    size = gguf.stat().st_size
    if not store.has_blob(layer_digest, size):
        tmp = store.root / ".tmp" / f"{gguf.name}.{os.getpid()}"
        shutil.copyfile(gguf, tmp)
        store.commit_blob(tmp, layer_digest)
    config: dict[str, object] = {
        "format": "gguf",
        "quantization": "Q4_1",
        "parameters": "135M",
        "architecture": "llama",
        "size": f"{size / (1 << 20):.2f}MiB",
    }
    if context_size is not None:
        config["context_size"] = context_size
    config_bytes = json.dumps(
        {
            "config": config,
            "descriptor": {"created": "2025-01-01T00:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_digest = store.write_blob(config_bytes)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": layer_digest, "size": size}],
        }
    ).encode()
    digest = store.write_blob(manifest)
    store.tag(name, Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(manifest)))
    return digest


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODELCTL_HOME whose store holds SmolLM2 (shared by the session: tests only read it)."""
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} is missing: run make setup")
    home = tmp_path_factory.mktemp("modelctl-home")
    write_model(Layout(home / "store"), SMOLLM2, FULL_REF)
    return home


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCTL_")}
    env["MODELCTL_HOME"] = str(home)
    # A model in the store must need no network: any attempt fails fast on a dead proxy.
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["MODELCTL_RETRIES"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture()
def env(model_home: Path) -> dict[str, str]:
    return clean_env(model_home)


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture()
def modelctl(env: dict[str, str]) -> Runner:
    """Run the real CLI; stdin is /dev/null unless ``input`` is given (so it is never a terminal)."""

    def run(
        *args: str, input: str | None = None, timeout: float = 180, env: dict[str, str] = env
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MODELCTL, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=ROOT,
        )

    return run


@pytest.fixture()
def port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number: int = sock.getsockname()[1]
        return number


@pytest.fixture()
def command() -> list[str]:
    """How to start modelctl (the argv prefix)."""
    return list(MODELCTL)
