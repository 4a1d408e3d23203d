"""How many streams a real pull runs: a link that caps each connection ends up with several, ``MODELCTL_FIXED_PARTS``
runs the cap from the start. docker-registry behind the per-connection rate-capping relay (tests/helpers/throttle.py),
``modelctl pull`` as a real process; the stream count is read from its progress line and the relay's connections."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ggufs import big_blob
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.pulls import pull_command, store_is_consistent
from helpers.servers import RegistryServer
from helpers.throttle import Throttle

MIB = 1 << 20
BLOB = 24 * MIB
RATE = 2 * MIB
"""Per connection: one stream would take 12 s for the blob, eight ~1.5 s."""
ENV = {"MODELCTL_PARTS": "8", "MODELCTL_PART_SIZE": str(MIB)}
FINAL = re.compile(r"100\.0% .*?(?: \((\d+) streams\))?$", re.MULTILINE)


@pytest.fixture()
def link(docker_registry: RegistryServer) -> Iterator[Throttle]:
    with Throttle(docker_registry.host, rate=RATE) as relay:
        yield relay


@pytest.fixture()
def ref(docker_registry: RegistryServer, link: Throttle, tmp_path: Path) -> str:
    layer = tmp_path / "big.gguf"
    digest = big_blob(layer, BLOB)
    layout = OCILayout(tmp_path / "layout")
    docker_v01_artifact(layout, "big", [layer], digests={layer: digest})
    push_layout(layout, "big", docker_registry, "ai/big:1")
    return f"{link.host}/ai/big:1"


def pulled_streams(ref: str, **env: str) -> int:
    """Pull ``ref`` (progress lines on stderr) and return the stream count its last progress line reports."""
    command = [arg for arg in pull_command(ref) if arg != "-q"]
    done = subprocess.run(command, env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    finals = FINAL.findall(done.stderr)
    assert finals, done.stderr
    assert len(store_is_consistent()) == 1
    return int(finals[-1] or 1)


def test_a_capped_link_ends_up_with_several_streams(ref: str, link: Throttle) -> None:
    streams = pulled_streams(ref, **ENV)
    assert 4 <= streams <= 8, f"{streams} streams on a link that caps each connection"
    assert link.most_connections >= streams  # the streams ran at once, each on its own connection


def test_fixed_parts_runs_the_cap_from_the_start(ref: str, link: Throttle) -> None:
    streams = pulled_streams(ref, **{**ENV, "MODELCTL_PARTS": "3", "MODELCTL_FIXED_PARTS": "1"})
    assert streams == 3
    assert 3 <= link.most_connections <= 4  # three streams, and the manifest's connection at most
