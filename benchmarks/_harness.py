"""Shared pieces of the benchmarks: a real docker-registry on a free port, pushing an artifact, timing helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelctl.config import Config
from modelctl.oci import mediatypes as mt
from modelctl.oci.client import RegistryClient
from modelctl.reference import parse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    host: str
    root: Path
    pid: int
    """The server process (its memory and CPU are read from /proc)."""


@contextlib.contextmanager
def docker_registry() -> Iterator[Registry]:
    """Debian's docker-registry (CNCF distribution 2.8) with a temp root."""
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        port = free_port()
        root = Path(tmp)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/")
            yield Registry(f"127.0.0.1:{port}", root, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def our_registry(root: Path) -> Iterator[Registry]:
    """Our registry (``python -m registry``) over ``root`` on a free port; its log is ``root`` + ``.log``."""
    log = root.with_suffix(".log")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry", "--root", str(root), "--addr", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        for _ in range(400):
            found = re.search(r"listening on http://(\S+)", log.read_text())
            if found:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(log.read_text())
        yield Registry(found.group(1), root, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def compile_modelctl() -> str:
    """Byte-compile modelctl's sources, as an installed package has them; returns the line a benchmark prints.

    With PYTHONDONTWRITEBYTECODE set (as in this project's shells) an edited module's stale ``.pyc`` is never
    rewritten, so every run recompiled it: ~0.1 s of a present pull's 0.25 s. A wheel's install writes them once."""
    import compileall

    import modelctl

    root = Path(modelctl.__file__).parent
    if not compileall.compile_dir(str(root), quiet=1):
        raise SystemExit(f"compileall failed on {root}")
    return f"modelctl's bytecode compiled first ({root}), as an installed package has it"


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def make_blob(path: Path, size: int) -> str:
    """A GGUF-prefixed file of pseudo-random bytes; returns its digest."""
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with path.open("wb") as f:
        written = 0
        counter = 0
        while written < size:
            chunk = (b"GGUF" if written == 0 else counter.to_bytes(8, "little")) + block
            chunk = chunk[: min(len(chunk), size - written)]
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
            counter += 1
    return "sha256:" + h.hexdigest()


def push_model(host: str, repo_tag: str, blob: Path, digest: str) -> str:
    """Push a Docker model-spec v0.1 artifact with one GGUF layer; returns the manifest digest."""
    ref = parse(f"{host}/{repo_tag}")
    size = blob.stat().st_size
    config = json.dumps(
        {
            "config": {"format": "gguf", "quantization": "F16", "parameters": "1B", "architecture": "llama"},
            "descriptor": {"created": "2025-01-01T00:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [digest]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": digest, "size": size}],
        }
    ).encode()
    with RegistryClient(Config(home=Path(tempfile.gettempdir()))) as client:
        if not client.blob_exists(ref, digest):
            client.upload_blob(ref, digest, size, blob)
        client.upload_blob(ref, config_digest, len(config), config)
        return client.put_manifest(ref, manifest, mt.OCI_MANIFEST)


def drop_caches_best_effort() -> None:
    subprocess.run(["sync"], check=False)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    drop_caches_best_effort()
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Run:
    """One command's wall time, CPU time and peak memory (``wait4``'s resource usage of the child)."""

    seconds: float
    user: float
    sys: float
    max_rss_mib: float
    stderr: str


def measured(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Like :func:`timed` (``sync`` first, output discarded), with the child's user/sys CPU and peak RSS; stderr is
    kept (progress lines)."""
    drop_caches_best_effort()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=text)
    return Run(seconds, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, text)


def median(values: list[float]) -> float:
    return statistics.median(values)


def sha256_file(path: Path) -> float:
    """The verification floor: hash the file from the page cache (read once before to warm it)."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass
    start = time.perf_counter()
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return time.perf_counter() - start


class ThrottlingProxy:
    """A TCP proxy that caps each connection's download rate, as CDNs do per connection."""

    def __init__(self, upstream: str, rate: float) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.rate = rate
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, throttle: bool) -> None:
            start = time.monotonic()
            sent = 0
            try:
                while data := await src.read(64 << 10):
                    dst.write(data)
                    await dst.drain()
                    if throttle:
                        sent += len(data)
                        ahead = sent / self.rate - (time.monotonic() - start)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
