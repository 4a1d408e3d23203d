"""A disk that fills up during pull (download, commit), tag (the index), save, load and package: exit 8 with one line
naming the directory and how much more room is needed, and nothing half-written outside ``ingest/``.

Two variants of each test (``disk``):

- ``tmpfs``: a real small filesystem (``mount -t tmpfs -o size=...``, needs root, which the CI machines are): the
  writes really fail, ``statvfs`` really reports the space, and the amounts in the message are checked.
- ``injected``: for a machine where the test cannot mount (not root): ``modelctl`` runs under
  ``tests/helpers/enospc.py``, which raises ENOSPC from Python's own write calls under one directory once a byte
  budget is spent (and reports that budget as the free space). The process, its files, the registry and the exit are
  real; the error is injected. The amounts are not checked there (a deleted temp file gives no budget back).

On a non-root machine the ``tmpfs`` variant is skipped with that reason and the ``injected`` one runs; as root both
run. ``save -o - > /dev/full`` needs neither: /dev/full is a real device that fails every write with ENOSPC.
Registries are real (Debian's docker-registry), behind a rate-capping TCP relay where a download must be caught
half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.ggufs import big_blob, padded_gguf, sha256_file
from helpers.oci_layout import OCILayout, docker_v01_artifact, push_layout
from helpers.servers import RegistryServer
from helpers.throttle import Throttle

ENOSPC = Path(__file__).resolve().parents[1] / "helpers" / "enospc.py"
MIB = 1 << 20
BLOB = 24 * MIB
LINE = (
    r"modelctl: error: not enough disk space in (?P<dir>\S+): (?P<doing>.+) needs (?P<least>at least )?"
    r"(?P<more>[\d.]+ [KMG]?i?B) more \((?P<free>[\d.]+ [KMG]?i?B) free\): (?P<hint>.+)"
)
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def home() -> Path:
    return Path(os.environ["MODELCTL_HOME"])


def size_of(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


@dataclass
class Disk:
    """A small disk: a real tmpfs, or a budget of bytes that modelctl, run through ``enospc.py``, may write there."""

    mode: str
    root: Path
    size: int
    control: Path
    filler: Path

    def command(self, *args: str) -> list[str]:
        if self.mode == "tmpfs":
            return [sys.executable, "-m", "modelctl", *args]
        return [sys.executable, str(ENOSPC), str(self.control), str(self.root), "--", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def fill(self) -> None:
        """Use up every free byte now."""
        if self.mode == "injected":
            self.control.write_text("0")
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for block in (MIB, 64 << 10, 4 << 10):
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * block):
                        pass
        finally:
            os.close(fd)

    def empty(self) -> None:
        """Give the space back."""
        if self.mode == "injected":
            self.control.write_text(str(1 << 40))
        self.filler.unlink(missing_ok=True)


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[int], Disk]]:
    """A factory: ``small_disk(size)`` is a Disk of ``size`` bytes (one per test)."""
    mounted: list[Path] = []

    def make(size: int) -> Disk:
        root = tmp_path / "small"
        root.mkdir()
        control = tmp_path / "budget"
        if request.param == "tmpfs":
            if os.geteuid() != 0:
                pytest.skip("mounting a tmpfs needs root; the injected variant of this test runs instead")
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True, text=True
            )
            assert done.returncode == 0, f"root, yet mount -t tmpfs failed: {done.stderr}"
            mounted.append(root)
        else:
            control.write_text(str(size))
        return Disk(request.param, root, size, control, root / "filler")

    yield make
    for root in mounted:
        subprocess.run(["umount", "-l", str(root)], check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> re.Match[str]:
    assert result.returncode == 8, f"exit {result.returncode}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    found = re.fullmatch(LINE, lines[0])
    assert found, lines[0]
    print(f"\n{lines[0]}")
    return found




def store_intact(expected_tags: dict[str, str] | None = None) -> None:
    """index.json parses (with the expected tags), every file in blobs/ hashes to its name, no temp file anywhere
    outside ingest/ (nor a state temp inside it)."""
    store = home() / "store"
    index = json.loads((store / "index.json").read_text())
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    assert tags == (expected_tags or {})
    for path in (store / "blobs" / "sha256").iterdir():
        assert sha256_file(path) == f"sha256:{path.name}", f"{path} is half-written or wrong"
    assert list((store / ".tmp").iterdir()) == [], "a temp file stayed in the store"
    assert [p for p in home().rglob("*.tmp") if p.is_file()] == [], "a temp file stayed behind"
    assert [p for p in home().rglob(".package-*")] == [], "package left its copy"


def tags() -> dict[str, str]:
    index = json.loads((home() / "store" / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}


def modelctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelctl", *args], capture_output=True, text=True, timeout=120)




# -- pull: download and commit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    ref: str
    layer: Path
    digest: str



@pytest.fixture()
def link(docker_registry: RegistryServer) -> Iterator[Throttle]:
    with Throttle(docker_registry.host, rate=MIB) as relay:
        yield relay


@pytest.fixture()
def published(docker_registry: RegistryServer, link: Throttle, tmp_path: Path) -> Published:
    layer = tmp_path / "big.gguf"
    digest = big_blob(layer, BLOB)
    layout = OCILayout(tmp_path / "layout")
    docker_v01_artifact(layout, "big", [layer], digests={layer: digest})
    push_layout(layout, "big", docker_registry, "ai/big:1")
    return Published(f"{link.host}/ai/big:1", layer, digest)


PULL_ENV = {"MODELCTL_PARTS": "4", "MODELCTL_PART_SIZE": str(4 * MIB)}


def saved_bytes(digest: str) -> int:
    try:
        state = json.loads((home() / "ingest" / digest[7:] / "state.json").read_text())
        return sum(done for _, _, done in state["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def test_the_disk_fills_up_during_a_download(
    small_disk: Callable[[int], Disk], published: Published, link: Throttle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program fills the disk while the blob downloads (the plan's free-space check had passed)."""
    disk = small_disk(100 * MIB)  # the pull's check asks for 24 MiB + 64 MiB of head-room
    monkeypatch.setenv("MODELCTL_HOME", str(disk.root / "home"))
    proc = subprocess.Popen(
        disk.command("pull", "-q", published.ref), env={**os.environ, **PULL_ENV}, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while saved_bytes(published.digest) < 2 * MIB:
            assert proc.poll() is None and time.monotonic() < deadline, "the download never got going"
            time.sleep(0.02)
        disk.fill()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    found = one_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err))
    assert Path(found["dir"]) == home() / "ingest"
    assert found["doing"] == f"the pull of {published.ref}"
    assert "run the same command to resume" in found["hint"]
    if disk.mode == "tmpfs":
        assert found["free"] == "0 B" and found["least"]
    partial = home() / "ingest" / published.digest[7:]
    assert json.loads((partial / "state.json").read_text())["digest"] == published.digest  # intact, not torn
    kept = saved_bytes(published.digest)
    assert kept > 0
    store_intact()
    assert not (home() / "store" / "blobs" / "sha256" / published.digest[7:]).exists()

    disk.empty()
    link.rate = 1e12
    before = link.bytes_down
    rerun = disk.run("pull", "-q", published.ref)
    assert rerun.returncode == 0, rerun.stderr
    assert link.bytes_down - before < BLOB - kept + 2 * MIB, "the rerun did not resume"
    assert sha256_file(home() / "store" / "blobs" / "sha256" / published.digest[7:]) == published.digest


def test_the_disk_is_full_when_the_blob_is_committed(
    small_disk: Callable[[int], Disk], published: Published, link: Throttle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download is complete in ingest/ (a pull stopped right after its last byte) and the disk is full: the
    commit (the journal of unflushed blobs, then the rename) finds no room; the blob must not enter blobs/."""
    from modelctl.digest import Digest
    from modelctl.store import Layout
    from modelctl.transfer import state

    disk = small_disk(100 * MIB)
    monkeypatch.setenv("MODELCTL_HOME", str(disk.root / "home"))
    Layout(home() / "store").ensure()
    partial = home() / "ingest" / published.digest[7:]
    partial.mkdir(parents=True)
    (partial / "data").write_bytes(published.layer.read_bytes())
    state.save(partial, Digest(published.digest), BLOB, [state.Part(0, BLOB, BLOB)])
    link.rate = 1e12
    disk.fill()

    found = one_line(disk.run("pull", "-q", published.ref))
    assert Path(found["dir"]) == home() / "store"
    if disk.mode == "tmpfs":
        assert found["free"] == "0 B" and found["least"]
    store_intact()
    assert not (home() / "store" / "blobs" / "sha256" / published.digest[7:]).exists()
    assert saved_bytes(published.digest) == BLOB and (partial / "data").stat().st_size == BLOB  # still resumable

    disk.empty()
    before = link.bytes_down
    rerun = disk.run("pull", "-q", published.ref)
    assert rerun.returncode == 0, rerun.stderr
    assert link.bytes_down - before < MIB, "the complete partial was fetched again"
    assert sha256_file(home() / "store" / "blobs" / "sha256" / published.digest[7:]) == published.digest


# -- the index, save, load, package -----------------------------------------------------------------------------


def test_the_index_cannot_be_rewritten(
    small_disk: Callable[[int], Disk], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk(32 * MIB)
    monkeypatch.setenv("MODELCTL_HOME", str(disk.root / "home"))
    gguf = padded_gguf(tmp_path / "m.gguf", 2 * MIB)
    assert modelctl("package", "--gguf", str(gguf), "ai/m:1").returncode == 0
    index = (home() / "store" / "index.json").read_bytes()
    disk.fill()

    found = one_line(disk.run("tag", "ai/m:1", "ai/m:2"))
    assert Path(found["dir"]) == home() / "store"
    assert (home() / "store" / "index.json").read_bytes() == index
    store_intact({"docker.io/ai/m:1": tags()["docker.io/ai/m:1"]})


def test_save_to_a_small_disk(small_disk: Callable[[int], Disk], tmp_path: Path) -> None:
    gguf = padded_gguf(tmp_path / "m.gguf", 16 * MIB)
    assert modelctl("package", "--gguf", str(gguf), "ai/m:1").returncode == 0
    assert modelctl("save", "ai/m:1", "-o", str(tmp_path / "whole.tar")).returncode == 0
    archive = (tmp_path / "whole.tar").stat().st_size
    disk = small_disk(8 * MIB)
    out = disk.root / "m.tar"

    found = one_line(disk.run("save", "ai/m:1", "-o", str(out)))
    assert Path(found["dir"]) == disk.root and found["doing"] == "the archive"
    assert f"{out} was not created" in found["hint"]
    assert not out.exists() and [p for p in disk.root.iterdir() if p.name != "filler"] == []
    if disk.mode == "tmpfs":  # what it asks for plus what is free is the archive's size
        assert abs(size_of(found["more"]) + size_of(found["free"]) - archive) < 0.2 * MIB
    store_intact({"docker.io/ai/m:1": tags()["docker.io/ai/m:1"]})


def test_save_to_dev_full(tmp_path: Path) -> None:
    gguf = padded_gguf(tmp_path / "m.gguf", 4 * MIB)
    assert modelctl("package", "--gguf", str(gguf), "ai/m:1").returncode == 0
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "modelctl", "save", "ai/m:1", "-o", "-"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 8, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        r"modelctl: error: no space left on the standard output \(/dev/full\) after 0 of \d+ bytes of the archive: "
        r"the archive there is incomplete; write it where [\d.]+ MiB is free \(-o FILE\)",
        lines[0],
    ), lines[0]


def test_load_into_a_small_disk(
    small_disk: Callable[[int], Disk], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = padded_gguf(tmp_path / "m.gguf", 16 * MIB)
    assert modelctl("package", "--gguf", str(gguf), "ai/m:1").returncode == 0
    archive = tmp_path / "m.tar"
    assert modelctl("save", "ai/m:1", "-o", str(archive)).returncode == 0
    disk = small_disk(8 * MIB)
    monkeypatch.setenv("MODELCTL_HOME", str(disk.root / "home"))

    found = one_line(disk.run("load", "-i", str(archive)))
    assert Path(found["dir"]) == home() / "store" / ".tmp"
    assert found["doing"] == f"loading {archive}" and found["hint"].endswith("nothing was loaded")
    if disk.mode == "tmpfs":
        assert abs(size_of(found["more"]) + size_of(found["free"]) - archive.stat().st_size) < 0.2 * MIB
    store_intact()


def test_package_into_a_small_disk(
    small_disk: Callable[[int], Disk], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = padded_gguf(tmp_path / "m.gguf", 16 * MIB)
    disk = small_disk(8 * MIB)
    monkeypatch.setenv("MODELCTL_HOME", str(disk.root / "home"))

    found = one_line(disk.run("package", "--gguf", str(gguf), "ai/m:1"))
    assert Path(found["dir"]) == home() / "ingest"
    assert found["doing"] == "packaging docker.io/ai/m:1" and found["hint"].endswith("no model was tagged")
    if disk.mode == "tmpfs":
        assert abs(size_of(found["more"]) + size_of(found["free"]) - gguf.stat().st_size) < 0.2 * MIB
    store_intact()
