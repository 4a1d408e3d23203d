"""An HTTP forward proxy on loopback that tunnels ``CONNECT host:port`` (what ``HTTPS_PROXY`` clients send) and
records every tunnel it opened, so a test can tell whether a client went through it or straight to the server.

It is the throttling relay (:mod:`helpers.throttle`) without a rate, whose target comes from each connection's
``CONNECT`` line instead of being fixed.

    with ConnectProxy() as proxy:
        env["HTTPS_PROXY"] = proxy.url
        ...
        assert proxy.tunnels == ["127.0.0.1:8443"]
"""

from __future__ import annotations

import contextlib
import socket

from helpers.throttle import Throttle

MAX_HEAD = 65536


class ConnectProxy(Throttle):
    """The proxy; a context manager. ``url`` is what ``HTTPS_PROXY`` names."""

    def __init__(self) -> None:
        super().__init__("", rate=float("inf"))
        self.tunnels: list[str] = []
        """``host:port`` of every tunnel opened, in order."""

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        super().__exit__(*exc)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            self._start(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
            data = client.recv(4096)
            if not data:
                return
            head += data
        method, target, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not port.isdigit():
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            server = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        server.settimeout(None)
        with self._lock:
            self.tunnels.append(target)
            self._sockets.append(server)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._start(self._pump, server, client, True)
        self._pump(client, server, False)
