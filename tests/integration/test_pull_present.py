"""A pull of what the store already holds: one manifest request for a tag, none at all for a lockfile's digests.

docker-registry on loopback (behind the counting fault proxy for the first test), ``modelctl pull`` as a real
process. How long these take is measured by benchmarks/pull.py, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import servers
from helpers.faults import FaultProxy
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.pulls import store_is_consistent
from helpers.servers import RegistryServer


def modelctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelctl", *args]
    return subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=120)


def publish(registry: RegistryServer, gguf: Path, layout: OCILayout, repo_tag: str) -> None:
    docker_v01_artifact(layout, "m", [gguf])
    push_layout(layout, "m", registry, repo_tag)


def test_a_present_model_costs_one_manifest_request(
    fault_proxy: FaultProxy, docker_registry: RegistryServer, tiny_gguf: Path, layout: OCILayout
) -> None:
    publish(docker_registry, tiny_gguf, layout, "ai/tiny:1")
    ref = f"{fault_proxy.host}/ai/tiny:1"
    first = modelctl("pull", "-q", ref)
    assert first.returncode == 0, first.stderr
    before = len(fault_proxy.requests())

    again = modelctl("pull", "-q", ref)

    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    asked = [(r.method, r.path) for r in fault_proxy.requests()[before:]]
    assert asked == [("GET", "/v2/ai/tiny/manifests/1")], asked  # no ping, no config, no blob, no header read
    assert len(store_is_consistent()) == 1


def test_a_locked_pull_of_present_models_needs_no_registry(tmp_path: Path, tiny_gguf: Path, layout: OCILayout) -> None:
    lock = tmp_path / "models.lock"
    with servers.docker_registry(tmp_path / "registry") as registry:
        publish(registry, tiny_gguf, layout, "ai/tiny:1")
        ref = f"{registry.host}/ai/tiny:1"
        pulled = modelctl("pull", "-q", "--lock", str(lock), ref)
        assert pulled.returncode == 0, pulled.stderr
    # the registry is gone: any request would fail (connection refused, exit 7)

    locked = modelctl("pull", "--locked", str(lock), "--json")

    assert locked.returncode == 0, locked.stderr
    docs = json.loads(locked.stdout)["models"]
    assert [(d["reference"], d["digest"]) for d in docs] == [(ref, pulled.stdout.strip())]
    assert Path(docs[0]["files"][0]).read_bytes() == tiny_gguf.read_bytes()
    assert store_is_consistent() == {ref: pulled.stdout.strip()}
