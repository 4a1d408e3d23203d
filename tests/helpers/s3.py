"""An S3-compatible object store for docker-registry's S3 driver: moto's server on a free loopback port (in this
process), behind a WSGI layer that records every request and can misbehave on the pre-signed GETs clients make.

The registry signs its own calls in an ``Authorization`` header (AWS SigV4); a client that follows the registry's
307 carries the signature in the query (``X-Amz-Signature``) and should carry no ``Authorization`` at all.
``plan`` lists what happens to the next pre-signed GETs of a path containing ``fault_path`` (the fit check's
256 KiB header window left alone): ``("cut", N)`` sends N bytes and drops the connection, ``("expire", 0)`` answers
403 ``AccessDenied: Request has expired`` as S3 does for an expired URL.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

HEADER_WINDOW = "bytes=0-262143"
EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    user_agent: str
    range: str | None
    status: int

    @property
    def presigned(self) -> bool:
        return "X-Amz-Signature" in self.query


class _Quiet(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class ObjectStore:
    """The store; a context manager. ``registry_storage()`` is the docker-registry configuration that uses it."""

    region = "us-east-1"
    access_key = "AKIDMODELCTLTEST"
    secret_key = "modelctl-test-secret"

    def __init__(self) -> None:
        self.bucket = f"registry-{secrets.token_hex(4)}"
        self.log: list[S3Request] = []
        self.served: dict[str, int] = {}
        self.fault_path = ""
        self.plan: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the store first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def registry_storage(self) -> list[str]:
        """The lines under ``storage:`` of a docker-registry config: the S3 driver on this store, redirects on."""
        return [
            "  s3:",
            f"    accesskey: {self.access_key}",
            f"    secretkey: {self.secret_key}",
            f"    region: {self.region}",
            f"    regionendpoint: {self.url}",
            f"    bucket: {self.bucket}",
            "    secure: false",
            "    v4auth: true",
            "  redirect:",
            "    disable: false",
        ]

    def requests(self, path_contains: str = "", *, presigned: bool | None = None) -> list[S3Request]:
        with self._lock:
            return [r for r in self.log if path_contains in r.path and presigned in (None, r.presigned)]

    def bytes_served(self, path_contains: str = "") -> int:
        """Body bytes of pre-signed GETs (what clients fetched) of paths containing ``path_contains``."""
        with self._lock:
            return sum(n for path, n in self.served.items() if path_contains in path)

    def __enter__(self) -> ObjectStore:
        from moto.server import DomainDispatcherApplication, create_backend_app

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._wrap(app), threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="object-store", daemon=True)
        self._thread.start()
        created = httpx.put(f"{self.url}/{self.bucket}", timeout=30)
        if created.status_code != 200:
            raise AssertionError(f"the object store did not create bucket {self.bucket}: {created.text[:300]}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        httpx.post(f"{self.url}/moto-api/reset", timeout=30)  # moto's state is per process: leave none behind
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- the recording, misbehaving layer ------------------------------------------------------------------

    def _wrap(self, app: Any) -> Any:
        def layer(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            path = environ.get("PATH_INFO", "")
            method = environ["REQUEST_METHOD"]
            seen = dict(
                method=method,
                path=path,
                query=query,
                authorization=environ.get("HTTP_AUTHORIZATION"),
                user_agent=environ.get("HTTP_USER_AGENT", ""),
                range=environ.get("HTTP_RANGE"),
            )
            action = self._next_action(method, path, query, environ.get("HTTP_RANGE"))
            if action is not None and action[0] == "expire":
                self._record(S3Request(**seen, status=403))
                headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(EXPIRED)))]
                start_response("403 Forbidden", headers)
                return [EXPIRED]
            status: list[int] = []

            def recording_start(code: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
                status.append(int(code.split(" ", 1)[0]))
                return start_response(code, headers, *rest)

            body = app(environ, recording_start)
            self._record(S3Request(**seen, status=status[0] if status else 0))
            if method != "GET" or "X-Amz-Signature" not in query:
                return body
            cut = action[1] if action is not None else None
            return self._counted(body, path, cut, environ.get("werkzeug.socket"))

        return layer

    def _next_action(
        self, method: str, path: str, query: dict[str, str], range_header: str | None
    ) -> tuple[str, int] | None:
        with self._lock:
            if (
                not self.plan
                or method != "GET"
                or "X-Amz-Signature" not in query
                or not self.fault_path
                or self.fault_path not in path
                or range_header == HEADER_WINDOW
            ):
                return None
            return self.plan.pop(0)

    def _counted(
        self, body: Iterable[bytes], path: str, cut: int | None, sock: socket.socket | None
    ) -> Iterator[bytes]:
        sent = 0
        try:
            for piece in body:
                if cut is not None and sent + len(piece) >= cut:
                    piece = piece[: cut - sent]
                    self._count(path, len(piece))
                    yield piece
                    if sock is not None:  # the bytes are written: now the connection breaks
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                self._count(path, len(piece))
                sent += len(piece)
                yield piece
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _record(self, request: S3Request) -> None:
        with self._lock:
            self.log.append(request)

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + n
