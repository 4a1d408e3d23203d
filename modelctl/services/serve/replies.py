"""How the server answers, whatever the API: errors as each dialect writes them, and streamed bodies.

An error is raised as a ModelctlError anywhere below a handler and rendered once, by the middleware, with the HTTP
status its type means and the body the client's library expects: OpenAI's ``{"error": {...}}``, Ollama's
``{"error": "..."}``, Anthropic's ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from modelctl.errors import AuthError, DoesNotFit, ModelctlError, NotFound, RuntimeCrashed, UsageError
from modelctl.services.serve.pool import QueueFull


class Forbidden(ModelctlError):
    """An endpoint this server was not started to allow (``/api/pull`` without ``--allow-pull``), or a request
    from a web page of another origin."""


def status(exc: ModelctlError) -> int:
    if isinstance(exc, QueueFull):
        return 503
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, DoesNotFit):
        return 507
    if isinstance(exc, UsageError):
        return 400
    return 500


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    503: "overloaded_error",
    507: "insufficient_storage",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    503: "overloaded_error",
}


def dialect(path: str) -> str:
    """``ollama``, ``anthropic`` or ``openai`` (also modelctl's own endpoints), from the request's path."""
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def error_body(exc: ModelctlError, kind: str) -> dict[str, Any]:
    code = status(exc)
    text = str(exc)
    if kind == "ollama":
        return {"error": text}
    if kind == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(code, "api_error"), "message": text}}
    detail: dict[str, Any] = {"message": text, "type": _OPENAI_TYPES.get(code, "server_error"), "code": None}
    if isinstance(exc, RuntimeCrashed):
        detail["code"] = "runtime_crashed"
    return {"error": detail}


def error_response(exc: ModelctlError, kind: str) -> web.Response:
    headers = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    return web.json_response(error_body(exc, kind), status=status(exc), headers=headers)


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


class EventStream:
    """A ``text/event-stream`` body (OpenAI's and Anthropic's streaming); headers go with the first event."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def send(self, doc: Any, *, event: str | None = None) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)
        head = f"event: {event}\n" if event else ""
        data = doc if isinstance(doc, str) else dumps(doc)
        await self.response.write(f"{head}data: {data}\n\n".encode())

    async def end(self) -> web.StreamResponse:
        if not self.response.prepared:
            await self.response.prepare(self.request)
        await self.response.write_eof()
        return self.response


class LineStream:
    """An ``application/x-ndjson`` body (Ollama's streaming): one JSON object per line."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})

    async def send(self, doc: Any) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)
        await self.response.write((dumps(doc) + "\n").encode())

    async def end(self) -> web.StreamResponse:
        if not self.response.prepared:
            await self.response.prepare(self.request)
        await self.response.write_eof()
        return self.response
