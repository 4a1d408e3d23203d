"""A loopback HTTP server standing in for a hostile registry: it answers ``/v2/`` like one, then whatever bytes a
test puts on a path (a manifest nested 50,000 deep, a gzip bomb), which a real registry would refuse to store.

    with HostileRegistry() as reg:
        reg.serve("/v2/ai/x/manifests/1", body, content_type=OCI_MANIFEST)
        ... modelctl pull {reg.host}/ai/x:1 ...
"""

from __future__ import annotations

import contextlib
import http.server
import json
from dataclasses import dataclass, field

from helpers.servers import serving


@dataclass
class Answer:
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class HostileRegistry:
    """``bearer``: every ``/v2/`` request without an Authorization header gets a 401 Bearer challenge whose realm is
    this server's ``/token`` (which answers what ``serve("/token", ...)`` says)."""

    def __init__(self, *, bearer: bool = False) -> None:
        self.bearer = bearer
        self.answers: dict[str, Answer] = {}
        self.requests: list[str] = []
        self._stack = contextlib.ExitStack()
        self._server: http.server.ThreadingHTTPServer | None = None

    def serve(self, path: str, body: bytes, *, content_type: str = "application/json", **headers: str) -> None:
        """Answer GET and HEAD of ``path`` with ``body``."""
        self.answers[path] = Answer(body, content_type, {k.replace("_", "-"): v for k, v in headers.items()})

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def answer(self, path: str, authorization: str | None) -> tuple[int, Answer]:
        if self.bearer and path.startswith("/v2/") and not authorization:
            challenge = f'Bearer realm="http://{self.host}/token",service="hostile"'
            return 401, Answer(b'{"errors":[{"code":"UNAUTHORIZED"}]}', headers={"WWW-Authenticate": challenge})
        if path == "/v2/":
            return 200, Answer(b"{}")
        found = self.answers.get(path.split("?", 1)[0])
        if found is not None:
            return 200, found
        return 404, Answer(json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]}).encode())

    def __enter__(self) -> HostileRegistry:
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                status, answer = registry.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(OSError):  # the client hung up once it had seen enough
                        self.wfile.write(answer.body)

            do_HEAD = do_GET

        self._server = self._stack.enter_context(serving(Handler))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
