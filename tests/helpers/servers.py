"""Debian's ``docker-registry`` (CNCF distribution 2.8) as a real process on a free loopback port.

One process per test: a temp root, a ``config.yml`` written for the instance (filesystem storage, deletes on,
no redis, log level warn, access log off), optionally htpasswd (bcrypt) or token auth. :func:`docker_registry`
is a context manager that waits until ``/v2/`` answers and always reaps the process (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import http.server
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import bcrypt
import httpx

DOCKER_REGISTRY = Path("/usr/bin/docker-registry")
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class RegistryServer:
    host: str
    """``127.0.0.1:PORT``: the registry part of a reference."""
    url: str
    """``http://127.0.0.1:PORT``."""
    root: Path
    """Where the instance keeps its config, log and storage."""
    username: str | None = None
    password: str | None = None

    @property
    def credentials(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None


class TokenAuthority(Protocol):
    """What distribution's ``auth: token`` needs to know about the token service."""

    @property
    def realm(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def rootcertbundle(self) -> Path: ...


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no test failure
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[http.server.ThreadingHTTPServer]:
    """A ThreadingHTTPServer for ``handler`` on ``host:port`` (default: a free loopback port), served from a daemon
    thread (a client hanging up is not reported); shut down, closed and joined on exit.

    ``tls`` wraps the listening socket server-side; the handshake happens in each handler's thread (on its first
    read), so a client that fails it blocks only its own connection."""
    server = _Server((host, port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(
    root: Path,
    port: int,
    htpasswd: Path | None,
    token: TokenAuthority | None,
    log_level: str = "warn",
    storage: Sequence[str] | None = None,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        f"  level: {log_level}",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        *(storage or ["  filesystem:", f"    rootdirectory: {root / 'data'}"]),
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
        # distribution refuses manifests whose layers carry ``urls`` unless allowed; the OCI conformance suite
        # (non-distributable layers) and a model with foreign layers need them accepted
        "validation:",
        "  manifests:",
        "    urls:",
        "      allow:",
        "        - ^https?://",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: modelctl-test", f"    path: {htpasswd}"]
    if token is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.realm}",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {token.rootcertbundle}",
        ]
    return "\n".join(lines) + "\n"


def write_htpasswd(path: Path, username: str, password: str) -> Path:
    """An htpasswd file with a bcrypt hash (the scheme distribution accepts); cost 4 keeps tests quick."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{hashed}\n")
    return path


@contextlib.contextmanager
def docker_registry(
    root: Path,
    *,
    htpasswd: tuple[str, str] | None = None,
    token: TokenAuthority | None = None,
    token_credentials: tuple[str, str] | None = None,
    storage: Sequence[str] | None = None,
) -> Iterator[RegistryServer]:
    """Run ``docker-registry serve`` with its data under ``root``; yield once ``/v2/`` answers.

    ``htpasswd=(user, password)`` turns on Basic auth; ``token`` turns on token auth (``token_credentials``
    are the account the returned :class:`RegistryServer` names, for pushing); ``storage`` replaces the filesystem
    driver's lines under ``storage:`` (indented two spaces: ``["  s3:", "    bucket: x", ...]``). The process is
    always reaped."""
    if not DOCKER_REGISTRY.is_file():
        raise AssertionError(f"{DOCKER_REGISTRY} is missing: apt-get install docker-registry (make setup does it)")
    root.mkdir(parents=True, exist_ok=True)
    htpasswd_path = write_htpasswd(root / "htpasswd", *htpasswd) if htpasswd else None
    creds = htpasswd or token_credentials
    for attempt in range(3):  # the free port can be taken between our probe and the server's bind
        port = free_port()
        config = root / "config.yml"
        config.write_text(_config(root, port, htpasswd_path, token, storage=storage))
        log = root / "registry.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [str(DOCKER_REGISTRY), "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        try:
            server = RegistryServer(
                host=f"127.0.0.1:{port}",
                url=f"http://127.0.0.1:{port}",
                root=root,
                username=creds[0] if creds else None,
                password=creds[1] if creds else None,
            )
            if not _wait_ready(server, proc):
                if attempt < 2 and "address already in use" in log.read_text(errors="replace"):
                    continue
                raise AssertionError(f"docker-registry did not start: {log.read_text(errors='replace')[-2000:]}")
            yield server
            return
        finally:
            stop(proc)
    raise AssertionError("docker-registry found no free port")


def _wait_ready(server: RegistryServer, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v2/", timeout=1).status_code in (200, 401):
                return True
        time.sleep(0.02)
    return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate, then kill; always wait, so no zombie outlives the test."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


OURS = ("-m", "registry")
"""``python -m registry``; ``("-m", "modelctl", "registry", "serve")`` starts the same server through the CLI."""


def start_ours(
    root: Path, *args: str, via: Sequence[str] = OURS, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Our registry over ``root`` on a free port (``--addr 127.0.0.1:0``), once its ``listening on`` line is out:
    (process, base URL, log file). Raises with the log when it exits or does not start; the caller stops it."""
    root.mkdir(parents=True, exist_ok=True)
    log = log or root.parent / f"{root.name}-{secrets.token_hex(3)}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, *via, "--root", str(root), "--addr", "127.0.0.1:0", *args],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if found := re.search(r"listening on (http://\S+)", log.read_text()):
            return proc, found.group(1), log
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"registry did not start: {log.read_text()}")
