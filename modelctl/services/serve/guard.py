"""Who may talk to the server: the API key, the Host a loopback server answers to, and the web pages allowed.

Three rules, checked before any handler runs:

* ``--api-key``: every request carries it, as ``Authorization: Bearer KEY`` (OpenAI's and Ollama's clients),
  ``x-api-key: KEY`` (Anthropic's), or as the password of HTTP Basic auth (what a browser asks for on the chat
  page). Compared in constant time.
* A server on a loopback address answers only to a loopback ``Host`` (``localhost``, ``127.x``, ``[::1]``): a
  web page that points its own host name at 127.0.0.1 (DNS rebinding) is refused.
* A request from a web page carries an ``Origin``; pages from the server itself are allowed, others only when
  ``--cors-origin`` names their origin (or ``*``), and then they get CORS headers. Without that a page elsewhere
  cannot make the browser post to this server, even with "simple" requests that CORS does not preflight.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from modelctl.errors import AuthError
from modelctl.services.serve.options import is_loopback
from modelctl.services.serve.replies import Forbidden
from modelctl.services.serve.state import server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CORS_ORIGIN = web.RequestKey("cors_origin", str)
ALLOWED_HEADERS = "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta, x-stainless-*"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    options = server(request).options
    if is_loopback(options.host) and not _loopback_name(request.host):
        raise Forbidden(
            f"this server answers only to a local Host, not {request.host!r}",
            hint="use http://127.0.0.1 or http://localhost",
        )
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin, request):
        if "*" not in options.cors_origins and origin not in options.cors_origins:
            raise Forbidden(
                f"requests from web pages at {origin} are refused", hint=f"serve with --cors-origin {origin}"
            )
        request[CORS_ORIGIN] = origin
        if request.method == "OPTIONS":  # a preflight carries no credentials
            return web.Response(status=204, headers=_preflight(request, origin))
    if options.api_key and not authorized(request, options.api_key):
        raise AuthError("a valid API key is required", hint="send it as Authorization: Bearer KEY or x-api-key")
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS headers to an allowed cross-origin answer, streamed or not (``on_response_prepare``)."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


def _preflight(request: web.Request, origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ALLOWED_HEADERS),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def authorized(request: web.Request, key: str) -> bool:
    given: list[str] = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        given.append(value.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            given.append(base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2])
    if "x-api-key" in request.headers:
        given.append(request.headers["x-api-key"].strip())
    wanted = key.encode("utf-8")
    return any(hmac.compare_digest(g.encode("utf-8"), wanted) for g in given)


def _loopback_name(host: str | None) -> bool:
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") and host.count(":") == 1 else host
    if name.startswith("["):
        name = name[1:].split("]")[0]
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _same_origin(origin: str, request: web.Request) -> bool:
    for scheme in ("http://", "https://"):
        if origin.startswith(scheme):
            return origin[len(scheme) :].rstrip("/") == request.host
    return False
