"""The least a verifying Python client can do: one GET, ``recv_into`` 1 MiB buffers, ``pwrite``, sha256 in a second
thread. No resume, no parts, no store, no sync. benchmarks/pull.py times it next to modelctl, so "how close is
modelctl to what Python on this machine allows" is measured, not guessed.

Usage (as pull.py runs it): python benchmarks/minimal_pull.py HOST:PORT /v2/<name>/blobs/<digest> OUT_FILE
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import sys
import threading

BUFFER = 1 << 20


def main() -> None:
    host, path, out = sys.argv[1:4]
    name, port = host.rsplit(":", 1)
    expected = path.rsplit("/", 1)[-1]
    sock = socket.create_connection((name, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(65536)
        if not more:
            raise SystemExit("connection closed in the headers")
        head += more
    header, body = head.split(b"\r\n\r\n", 1)
    lines = header.decode("latin-1").split("\r\n")
    if " 200 " not in lines[0] + " ":
        raise SystemExit(lines[0])
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.strip().lower() == "content-length")
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, length)
    hasher = hashlib.sha256(body)
    os.pwrite(fd, body, 0)
    pos = len(body)
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    for _ in range(6):
        free.put(bytearray(BUFFER))

    def hash_loop() -> None:
        while (item := full.get()) is not None:
            hasher.update(memoryview(item[0])[: item[1]])
            free.put(item[0])

    thread = threading.Thread(target=hash_loop)
    thread.start()
    while pos < length:
        buffer = free.get()
        view = memoryview(buffer)[: min(BUFFER, length - pos)]
        filled = 0
        while filled < len(view):
            got = sock.recv_into(view[filled:])
            if not got:
                raise SystemExit("connection closed in the body")
            filled += got
        os.pwrite(fd, view, pos)
        full.put((buffer, filled))
        pos += filled
    full.put(None)
    thread.join()
    os.close(fd)
    if "sha256:" + hasher.hexdigest() != expected:
        raise SystemExit("digest mismatch")


if __name__ == "__main__":
    main()
