"""A real ``modelctl serve`` process for the serve tests: started on a free port, awaited, always stopped.

The store holds SmolLM2-135M under two tags whose manifests differ (two models, one GGUF blob), so that the
tests can load two models without a second download. Small contexts and answers keep the 2-core machine free.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from e2e.conftest import FULL_REF, MODELCTL, REF, ROOT, SMOLLM2, clean_env, write_model

from modelctl.store import Layout

SECOND = "ai/smollm2:second"
SECOND_FULL = "docker.io/ai/smollm2:second"
FAST = ("--ctx-size", "512", "--threads", "1")
"""Load settings small enough for a shared 2-core machine."""
ONE_MODEL = "450MiB"
"""A --memory that holds one SmolLM2 at context 512 (304 MiB by the fit check) but not two."""


def two_models(home: Path) -> Path:
    """A MODELCTL_HOME whose store has SmolLM2 as ``ai/smollm2:135M-Q4_1`` and ``ai/smollm2:second``."""
    store = Layout(home / "store")
    write_model(store, SMOLLM2, FULL_REF)
    write_model(store, SMOLLM2, SECOND_FULL, context_size=512)
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    """``http://127.0.0.1:PORT``."""
    log: Path
    env: dict[str, str]

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def events(self) -> list[tuple[str, str]]:
        """The server's load and unload lines, in order: ("loaded" | "unloaded" | "lost", model)."""
        found = []
        for line in self.lines():
            match = re.match(r"modelctl: (loaded|unloaded|lost) (\S+)", line)
            if match:
                found.append((match.group(1), match.group(2)))
        return found

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"{text!r} not in the server's log: {self.log.read_text()}"
            time.sleep(0.1)


@contextlib.contextmanager
def serve(home: Path, *args: str, log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``modelctl serve ARGS`` over ``home`` on a free port; yields once it answers, stops it (SIGTERM) after."""
    port = free_port()
    environment = dict(env or clean_env(home))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*MODELCTL, "serve", "--port", str(port), *args],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log, environment)
    try:
        server.wait_for("modelctl: serving", timeout=120)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_pids(server_pid: int) -> list[int]:
    """The runtime worker processes the server started (its children running modelctl.runtime.worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"modelctl.runtime.worker" in cmdline:
            found.append(int(entry.name))
    return found


def chat(url: str, model: str, text: str = "Say hello.", *, max_tokens: int = 8, **extra: object) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


__all__ = ["FULL_REF", "REF", "Server", "chat", "serve", "two_models", "worker_pids"]
