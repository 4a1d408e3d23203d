"""Ctrl-C and SIGTERM, sent to real ``modelctl`` processes half-way through pull, push, save, load and package.

Everything is real: Debian's docker-registry on a loopback port, a slow link in front of it (a TCP relay capping
each connection's rate, ``helpers.throttle``; it can also stall, leaving the client blocked in a read), the CLI as a
subprocess, a slow pipe for ``save -o -`` and ``load``. Each test sends the signal once the command is visibly
half-way, then checks the documented outcome: exit 130 (SIGINT) or 143 (SIGTERM), exactly one line on stderr saying
what was kept, the time from the signal to the exit (the issue asks for 1 s; asserted under 3 s, a generous bound
for a loaded 2-core CI machine, and printed: run with ``-s`` to read the figures), partial output removed or
resumable with the store consistent, and a rerun that completes (and, for pull, fetches only what was missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import servers
from helpers.ggufs import big_blob, padded_gguf, sha256_file
from helpers.oci_layout import OCILayout, docker_v01_artifact, inspect_raw, push_layout
from helpers.servers import RegistryServer
from helpers.throttle import Throttle

MODELCTL = [sys.executable, "-m", "modelctl"]
BLOB = 48 << 20
RATE = 1 << 20
"""Bytes per second per connection: a 48 MiB blob in 4 parts takes ~12 s, so a signal lands mid-download."""
BOUND = 3.0
"""Seconds from the signal to the exit. The issue asks for 1 s; this bound leaves room for a loaded machine."""
FAST = 1e12
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


def home() -> Path:
    return Path(os.environ["MODELCTL_HOME"])


@dataclass
class Stopped:
    code: int
    stderr: str
    elapsed: float
    """Seconds from the signal to the exit."""
    stdout: bytes = b""

    def line(self, pattern: str, *, progress: bool = False) -> re.Match[str]:
        """The one stderr line, which must match ``pattern`` entirely. With ``progress``, the plain progress lines a
        command without ``--quiet`` prints before it (two spaces, a digest, a percentage) are let through."""
        lines = self.stderr.splitlines()
        if progress:
            lines = [x for x in lines if not re.fullmatch(r"  [0-9a-f]{12}: .*%.*", x)]
        assert len(lines) == 1, f"expected one line on stderr, got: {self.stderr!r}"
        found = re.fullmatch(pattern, lines[0])
        assert found, f"{lines[0]!r} does not match {pattern!r}"
        return found


def interrupt(
    args: list[str],
    ready: Callable[[], bool],
    sig: int,
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.DEVNULL,
    feed: Callable[[subprocess.Popen[bytes]], None] | None = None,
    what: str,
) -> Stopped:
    """Start ``modelctl ARGS``, wait until ``ready()`` (polled; ``feed`` runs instead of sleeping, for pipes), send
    ``sig``, wait for the exit; the process is always reaped."""
    proc = subprocess.Popen(
        [*MODELCTL, *args], env={**os.environ, **(env or {})}, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, f"modelctl {args[0]} ended before the signal: {proc.communicate()[1]!r}"
            assert time.monotonic() < deadline, f"modelctl {args[0]} never got half-way"
            if feed is not None:
                feed(proc)
            else:
                time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - sent
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        out = proc.stdout.read() if proc.stdout is not None else b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    print(f"\n{what} {signal.Signals(sig).name}: exit {code} {elapsed:.3f} s after the signal")
    return Stopped(code, err, elapsed, out)


def modelctl(*args: str, input: bytes | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*MODELCTL, *args], env={**os.environ, **env}, input=input, capture_output=True, timeout=300
    )




def tags() -> dict[str, str]:
    index = json.loads((home() / "store" / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}


def blobs_verify() -> list[str]:
    """Every file in blobs/sha256 hashes to its name (nothing half-written or wrong entered the store)."""
    names = []
    for path in sorted((home() / "store" / "blobs" / "sha256").iterdir()):
        assert sha256_file(path) == f"sha256:{path.name}", f"{path} is not what its name says"
        names.append(path.name)
    return names


def temp_files() -> list[Path]:
    """Files a writer left behind: temp files (``.x.tmp``, ``.package-*``, ``load.*`` in the store's .tmp/)."""
    root = home()
    found = [p for p in root.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or ".package-" in p.name)]
    return found + [p for p in (root / "store" / ".tmp").glob("*") if p.is_file()]


def saved_parts(digest: str) -> list[list[int]]:
    state = home() / "ingest" / digest.removeprefix("sha256:") / "state.json"
    try:
        return json.loads(state.read_text())["parts"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError):
        return []


def saved_bytes(digest: str) -> int:
    return sum(done for _, _, done in saved_parts(digest))


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with servers.docker_registry(tmp_path / "registry") as server:
        yield server


@dataclass(frozen=True)
class Published:
    repo_tag: str
    layer: Path
    digest: str


@pytest.fixture()
def published(registry: RegistryServer, tmp_path: Path) -> Published:
    """A Docker v0.1 model with one 48 MiB layer on the registry (pushed with skopeo, an independent client)."""
    layer = tmp_path / "big.gguf"
    digest = big_blob(layer, BLOB)
    layout = OCILayout(tmp_path / "layout")
    docker_v01_artifact(layout, "big", [layer], digests={layer: digest})
    push_layout(layout, "big", registry, "ai/big:1")
    return Published("ai/big:1", layer, digest)


@pytest.fixture()
def link(registry: RegistryServer) -> Iterator[Throttle]:
    with Throttle(registry.host, rate=RATE) as relay:
        yield relay






PULL_LINE = r"modelctl: interrupted: (\d+) of (\d+) bytes kept; run the same command to resume"
PULL_ENV = {"MODELCTL_PARTS": "4", "MODELCTL_PART_SIZE": str(4 << 20)}


# -- pull -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS)
def test_pull_stops_at_once_keeps_the_partial_and_resumes(published: Published, link: Throttle, sig: int) -> None:
    ref = f"{link.host}/{published.repo_tag}"
    stopped = interrupt(
        ["pull", "-q", ref],
        lambda: saved_bytes(published.digest) >= 4 << 20,
        sig,
        env=PULL_ENV,
        what="pull",
    )
    assert stopped.code == 128 + sig
    kept, total = map(int, stopped.line(PULL_LINE).groups())
    assert total == BLOB
    assert stopped.elapsed < BOUND
    # what the line says is what the saved state says, and those bytes are the blob's
    parts = saved_parts(published.digest)
    assert kept == sum(done for _, _, done in parts) >= 4 << 20
    data = (home() / "ingest" / published.digest[7:] / "data").read_bytes()
    original = published.layer.read_bytes()
    for start, _, done in parts:
        assert data[start : start + done] == original[start : start + done]
    assert tags() == {} and blobs_verify() == [] and temp_files() == []

    link.rate = FAST
    before = link.bytes_down
    rerun = modelctl("pull", "-q", ref, **PULL_ENV)
    assert rerun.returncode == 0, rerun.stderr
    fetched = link.bytes_down - before
    assert fetched < BLOB - kept + (2 << 20), f"the rerun fetched {fetched} bytes; {BLOB - kept} were missing"
    assert published.digest[7:] in blobs_verify()
    assert list(tags().values()) == [rerun.stdout.decode().strip()]
    print(f"pull {signal.Signals(sig).name}: kept {kept} of {total}; the rerun fetched {fetched} bytes")


def test_pull_blocked_in_a_read_on_a_stalled_link_stops_at_once(published: Published, link: Throttle) -> None:
    """The link goes dead mid-download: every part is blocked in ``recv`` (the stall timeout is 30 s)."""
    ref = f"{link.host}/{published.repo_tag}"

    def stalled() -> bool:
        if saved_bytes(published.digest) < 2 << 20:
            return False
        link.stall()
        time.sleep(1.0)  # long enough for every part to be waiting in a read
        return True

    stopped = interrupt(["pull", "-q", ref], stalled, signal.SIGINT, env=PULL_ENV, what="pull (stalled link)")
    assert stopped.code == 130
    kept, _ = map(int, stopped.line(PULL_LINE).groups())
    assert stopped.elapsed < BOUND
    assert kept == saved_bytes(published.digest) > 0
    link.resume()
    link.rate = FAST
    rerun = modelctl("pull", "-q", ref, **PULL_ENV)
    assert rerun.returncode == 0, rerun.stderr
    assert published.digest[7:] in blobs_verify() and temp_files() == []


# -- push -----------------------------------------------------------------------------------------------------


def test_push_stops_at_once_and_pushes_no_manifest(registry: RegistryServer, link: Throttle, tmp_path: Path) -> None:
    ref = f"{link.host}/ai/pushed:1"
    gguf = padded_gguf(tmp_path / "model.gguf", 24 << 20)
    packaged = modelctl("package", "--gguf", str(gguf), ref)
    assert packaged.returncode == 0, packaged.stderr
    stopped = interrupt(["push", ref], lambda: link.bytes_up >= 2 << 20, signal.SIGINT, what="push")
    assert stopped.code == 130
    line = (
        r"modelctl: interrupted: (\d) of (\d) blobs \((\d+) of (\d+) bytes\) are on 127\.0\.0\.1:\d+, "
        r"no manifest was pushed; run the same command to push the rest"
    )
    have, blobs, done, total = map(int, stopped.line(line, progress=True).groups())
    assert blobs == 2 and have < blobs and done < total
    assert stopped.elapsed < BOUND
    assert httpx.get(f"{registry.url}/v2/ai/pushed/manifests/1").status_code == 404, "a manifest was pushed"

    link.rate = FAST
    rerun = modelctl("push", ref)
    assert rerun.returncode == 0, rerun.stderr
    served = inspect_raw(registry, "ai/pushed:1")
    assert f"sha256:{hashlib.sha256(served).hexdigest()}" == tags()[f"{link.host}/ai/pushed:1"]


# -- save -----------------------------------------------------------------------------------------------------


def test_save_to_a_slow_pipe_stops_at_once(tmp_path: Path) -> None:
    gguf = padded_gguf(tmp_path / "model.gguf", 16 << 20)
    assert modelctl("package", "--gguf", str(gguf), "ai/saved:1").returncode == 0
    before = tags()
    received = bytearray()

    def reader_stops_reading() -> bool:
        return len(received) >= 1 << 20

    def read_some(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        received.extend(proc.stdout.read1(64 << 10))
        if len(received) >= 1 << 20:
            time.sleep(0.5)  # the pipe fills up: save blocks in write()

    stopped = interrupt(
        ["save", "ai/saved:1", "-o", "-"],
        reader_stops_reading,
        signal.SIGTERM,
        stdout=subprocess.PIPE,
        feed=read_some,
        what="save -o - (a pipe nobody reads)",
    )
    assert stopped.code == 143
    line = (
        r"modelctl: interrupted: (\d+) of (\d+) bytes of the archive written to the standard output \(a pipe\), "
        r"which is incomplete; run the same command to save it again"
    )
    written, total = map(int, stopped.line(line).groups())
    assert len(received) <= written < total
    assert stopped.elapsed < BOUND
    assert tags() == before and temp_files() == []


def test_save_to_a_file_removes_the_partial_archive(tmp_path: Path) -> None:
    """A 1 GiB model whose weights are a hole (no disk, no I/O to read) makes the archive's write take a while."""
    gguf = padded_gguf(tmp_path / "model.gguf", 1 << 30, sparse=True)
    # package copies it in (1 GiB of real writes once): link it into a store built in place instead
    store_model_in_place(gguf, "docker.io/ai/huge:1")
    out = tmp_path / "huge.tar"
    temps = lambda: list(tmp_path.glob(".huge.tar.*.tmp"))  # noqa: E731

    stopped = interrupt(
        ["save", "ai/huge:1", "-o", str(out)],
        lambda: any(p.stat().st_size >= 8 << 20 for p in temps()),
        signal.SIGINT,
        what="save -o FILE",
    )
    assert stopped.code == 130
    line = (
        rf"modelctl: interrupted: (\d+) of (\d+) bytes of the archive written, {re.escape(str(out))} not created "
        r"\(the partial file was removed\); run the same command to save it"
    )
    written, total = map(int, stopped.line(line).groups())
    assert 8 << 20 <= written < total
    assert stopped.elapsed < BOUND
    assert not out.exists() and temps() == []


def store_model_in_place(gguf: Path, name: str) -> None:
    """Tag ``gguf`` in the test's store as a Docker v0.1 model without copying it: the file is hard-linked into
    blobs/ first, so ``write_model`` finds the blob there and writes only the config and manifest."""
    from e2e.conftest import write_model  # tests/ is on sys.path

    from modelctl.store import Layout

    store = Layout(home() / "store")
    store.ensure()
    staged = store.root / ".tmp" / "in-place"
    os.link(gguf, staged)
    store.commit_blob(staged, sha256_file(gguf))
    write_model(store, gguf, name)


# -- load -----------------------------------------------------------------------------------------------------


def test_load_from_a_slow_pipe_stops_at_once_and_loads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = padded_gguf(tmp_path / "model.gguf", 16 << 20)
    assert modelctl("package", "--gguf", str(gguf), "ai/loaded:1").returncode == 0
    archive = tmp_path / "model.tar"
    assert modelctl("save", "ai/loaded:1", "-o", str(archive)).returncode == 0
    monkeypatch.setenv("MODELCTL_HOME", str(tmp_path / "elsewhere"))
    data = archive.read_bytes()
    sent = 0

    def send_some(proc: subprocess.Popen[bytes]) -> None:
        nonlocal sent
        assert proc.stdin is not None
        if sent < 4 << 20:
            proc.stdin.write(data[sent : sent + (256 << 10)])
            proc.stdin.flush()
            sent += 256 << 10
        time.sleep(0.02)

    staged = lambda: list((home() / "store" / ".tmp").glob("load.*"))  # noqa: E731
    stopped = interrupt(
        ["load"],
        lambda: sent >= 4 << 20 and bool(staged()),
        signal.SIGINT,
        stdin=subprocess.PIPE,
        feed=send_some,
        what="load (a pipe that stopped sending)",
    )
    assert stopped.code == 130
    line = (
        r"modelctl: interrupted: (\d+) bytes of stdin read, no model was tagged \(the partial files were removed\); "
        r"run the same command to load it"
    )
    read = int(stopped.line(line).group(1))
    assert 0 < read <= sent
    assert stopped.elapsed < BOUND
    assert tags() == {} and blobs_verify() == [] and temp_files() == []

    rerun = modelctl("load", "-i", str(archive))
    assert rerun.returncode == 0, rerun.stderr
    assert "docker.io/ai/loaded:1" in tags()


# -- package --------------------------------------------------------------------------------------------------


def test_package_stops_at_once_and_tags_nothing(tmp_path: Path) -> None:
    gguf = padded_gguf(tmp_path / "model.gguf", 1 << 30, sparse=True)
    copies = lambda: list((home() / "ingest").glob(".package-*"))  # noqa: E731
    stopped = interrupt(
        ["package", "--gguf", str(gguf), "ai/packaged:1"],
        lambda: any(p.stat().st_size >= 8 << 20 for p in copies()),
        signal.SIGTERM,
        what="package",
    )
    assert stopped.code == 143
    line = (
        r"modelctl: interrupted: 0 of (\d+) bytes of the files are in the store, no model was tagged "
        r"\(the partial copy was removed\); run the same command to package it"
    )
    assert int(stopped.line(line).group(1)) == 1 << 30
    assert stopped.elapsed < BOUND
    assert copies() == [] and tags() == {} and temp_files() == []
