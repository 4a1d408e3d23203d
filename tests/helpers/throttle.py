"""A slow link on loopback: a TCP relay that caps each connection's rate, both ways, and can stall it.

Unlike the HTTP fault proxy it knows nothing of HTTP, so it slows uploads (``push``) as well as downloads, and a
stall leaves the client blocked in a ``recv`` (or a ``send`` once the socket buffers fill) the way a dead link does.

    with Throttle("127.0.0.1:5000", rate=2 << 20) as link:   # 2 MiB/s per connection and direction
        ... pull f"{link.host}/ai/x:1" ...
        link.stall()                                           # nothing moves any more
        assert link.bytes_down > 0
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 16 << 10
SOCKET_BUFFER = 64 << 10
"""Small kernel buffers on the relay's sockets, so that a capped rate holds the client back instead of the kernel
soaking up megabytes on loopback."""


class Throttle:
    """The relay; a context manager. Clients connect to ``host``; it connects to ``upstream`` per connection."""

    def __init__(self, upstream: str, *, rate: float) -> None:
        self.upstream = upstream
        self.rate = rate
        """Bytes per second, per connection and direction."""
        self.bytes_down = 0
        """Bytes relayed from the upstream to clients."""
        self.bytes_up = 0
        self.most_connections = 0
        """The most client connections open at once."""
        self._open = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def stall(self) -> None:
        """Stop relaying: clients block in their reads (and in their writes once buffers fill)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def __enter__(self) -> Throttle:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() alone leaves blocked
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            try:
                server = socket.create_connection((host, int(port)), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            with self._lock:
                self._sockets += [client, server]
                self._open += 1
                self.most_connections = max(self.most_connections, self._open)
            self._start(self._pump, server, client, True)
            self._start(self._pump, client, server, False)

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        started = time.monotonic()
        sent = 0
        try:
            while not self._closed.is_set():
                self._flowing.wait()
                data = src.recv(CHUNK)
                if not data:
                    break
                while not self._flowing.is_set() and not self._closed.is_set():
                    self._flowing.wait(0.05)
                dst.sendall(data)
                sent += len(data)
                with self._lock:
                    if down:
                        self.bytes_down += len(data)
                    else:
                        self.bytes_up += len(data)
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            if down:
                with self._lock:
                    self._open -= 1
