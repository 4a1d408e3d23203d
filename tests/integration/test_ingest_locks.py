"""A pull leaves no ``<digest>.lock`` in ``ingest/``: each blob's lock file goes once the blob is in the store.

Real docker-registry (distribution 2.8), real ``modelctl pull`` processes, concurrent pulls of the same blobs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.ggufs import big_blob, tiny_llama
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.pulls import home, pull, pull_command, store_is_consistent
from helpers.servers import RegistryServer


def publish(registry: RegistryServer, tmp_path: Path, repo_tag: str, gguf: Path) -> str:
    layout = OCILayout(tmp_path / f"layout-{repo_tag.replace('/', '-').replace(':', '-')}")
    docker_v01_artifact(layout, "m", [gguf], license=b"MIT\n")
    push_layout(layout, "m", registry, repo_tag)
    return f"{registry.host}/{repo_tag}"


def lock_files() -> list[Path]:
    ingest = home() / "ingest"
    return sorted(ingest.rglob("*.lock")) if ingest.is_dir() else []


def test_pulls_leave_no_lock_files(docker_registry: RegistryServer, tmp_path: Path) -> None:
    first = publish(docker_registry, tmp_path, "ai/one:1", tiny_llama(tmp_path / "one.gguf"))
    second = publish(docker_registry, tmp_path, "ai/two:1", tiny_llama(tmp_path / "two.gguf", seed=2))
    for ref in (first, second, first):  # the third finds everything present
        result = pull(ref)
        assert result.returncode == 0, result.stderr
    assert len(store_is_consistent()) == 2
    assert lock_files() == []  # before: one per blob pulled (3 per model here)


def test_concurrent_pulls_of_the_same_blobs_leave_no_lock_files(
    docker_registry: RegistryServer, tmp_path: Path
) -> None:
    """Four processes race for the same blobs: each waits on a lock that the first removes when its blob is stored,
    and each ends with the blob verified in the store and no lock file left behind."""
    gguf = tmp_path / "big.gguf"
    big_blob(gguf, 24 << 20)
    ref = publish(docker_registry, tmp_path, "ai/shared:1", gguf)
    procs = [
        subprocess.Popen(pull_command(ref), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    try:
        outcomes = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outcomes]
    assert len({out for out, _ in outcomes}) == 1  # the same manifest digest for all
    assert list(store_is_consistent().values()) == [outcomes[0][0].strip()]
    assert lock_files() == []
