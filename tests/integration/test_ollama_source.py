"""``ollama://`` references end to end: a real registry (Debian's docker-registry) serving an Ollama-format model,
reached through ``MODELCTL_MIRRORS=registry.ollama.ai=...``, the real CLI as subprocesses, the real SmolLM2 GGUF.

The Ollama manifest is what registry.ollama.ai serves: Docker schema 2, ``container.image.v1+json`` config,
layers model (the GGUF), template (a Go template, not Jinja) and params. ``run`` must chat with the GGUF's own
Jinja template (tokenizer.chat_template): the Go template here would be a Jinja syntax error if it were used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import servers
from helpers.ggufs import sha256_file as sha256
from helpers.oci_layout import OCILayout, ollama_artifact, push_layout
from helpers.servers import RegistryServer

REF = "ollama://smollm2:135m"
FULL = "registry.ollama.ai/library/smollm2:135m"
GO_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


@contextmanager
def serving(tmp_path: Path, gguf: Path, params: dict[str, object]) -> Iterator[tuple[RegistryServer, str]]:
    """A docker-registry holding ``library/smollm2:135m`` in Ollama's format; yields it and the manifest digest."""
    layout = OCILayout(tmp_path / "layout")
    ollama_artifact(
        layout,
        "135m",
        gguf,
        template=GO_TEMPLATE,
        params=params,
        license=b"Apache-2.0",
        model_type="135M",
        file_type="Q4_1",
    )
    with servers.docker_registry(tmp_path / "registry") as server:
        pushed = push_layout(layout, "135m", server, "library/smollm2:135m")
        assert pushed.via == "http"  # skopeo cannot carry Ollama layers; see helpers.oci_layout
        yield server, pushed.digest


@pytest.fixture()
def ollama_registry(tmp_path: Path, smollm2_gguf: Path) -> Iterator[tuple[RegistryServer, str]]:
    with serving(tmp_path, smollm2_gguf, {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}) as served:
        yield served


def modelctl(
    *args: str, home: Path, registry: RegistryServer | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MODELCTL_HOME=str(home), MODELCTL_RETRIES="0")
    if registry is not None:
        env["MODELCTL_MIRRORS"] = f"registry.ollama.ai={registry.url}"
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env=env,
        input=stdin if stdin is not None else "",  # never the terminal: run would start a chat
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_pull_list_inspect_rm(ollama_registry: tuple[RegistryServer, str], tmp_path: Path, smollm2_gguf: Path) -> None:
    server, digest = ollama_registry
    home = tmp_path / "home"
    pulled = modelctl("pull", "--json", REF, home=home, registry=server)
    assert pulled.returncode == 0, pulled.stderr
    doc = json.loads(pulled.stdout)["models"][0]
    assert doc["digest"] == digest
    files = [Path(f) for f in doc["files"]]
    assert len(files) == 1 and sha256(files[0]) == sha256(smollm2_gguf)

    listed = json.loads(modelctl("list", "--json", home=home).stdout)
    assert [(m["reference"], m["format"], m["quantization"]) for m in listed] == [(FULL, "ollama", "Q4_1")]
    assert listed[0]["name"] and listed[0]["digest"] == digest

    inspected = json.loads(modelctl("inspect", REF, home=home).stdout)
    assert inspected["reference"] == FULL and inspected["format"] == "ollama"
    assert inspected["manifest"]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"

    path = modelctl("path", REF, home=home)
    assert path.returncode == 0 and sha256(Path(path.stdout.strip())) == sha256(smollm2_gguf)

    removed = modelctl("rm", REF, home=home)
    assert removed.returncode == 0, removed.stderr
    assert FULL in removed.stdout
    assert json.loads(modelctl("list", "--json", home=home).stdout) == []
    blobs = list((home / "store" / "blobs" / "sha256").iterdir())
    assert blobs == [], "rm deletes the model's blobs (no other tag shares them)"
    assert not (home / "models" / digest.removeprefix("sha256:")).exists()


def test_run_uses_the_gguf_chat_template(ollama_registry: tuple[RegistryServer, str], tmp_path: Path) -> None:
    """``run`` pulls the ollama:// model, then answers through the GGUF's Jinja template (Go template ignored)."""
    server, _ = ollama_registry
    home = tmp_path / "home"
    result = modelctl(
        "run",
        REF,
        "Answer in one short sentence.",
        "--ctx-size",
        "1024",
        "--threads",
        "2",
        "--temperature",
        "0",
        home=home,
        registry=server,
        stdin="What is the capital of France?",
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "{{" not in result.stdout and ".Prompt" not in result.stdout

    server_gone = modelctl("run", "--no-pull", REF, "Say hi.", "--ctx-size", "256", "--max-tokens", "3", home=home)
    assert server_gone.returncode == 0, server_gone.stderr  # present locally: no registry needed


def test_run_applies_the_params_layer(tmp_path: Path, smollm2_gguf: Path) -> None:
    """Ollama's ``params`` are run's defaults: here a stop string cuts the answer before the word it would say."""
    question = "What is the capital of France?"
    args = ("run", REF, "Answer in one short sentence.", "--ctx-size", "1024", "--threads", "2")
    with serving(tmp_path, smollm2_gguf, {"stop": ["Paris"], "temperature": 0}) as (server, _):
        home = tmp_path / "home"
        stopped = modelctl(*args, home=home, registry=server, stdin=question)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() and "Paris" not in stopped.stdout
    # the same model and question without the stop string (the test above) answers "Paris"
