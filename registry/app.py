"""The HTTP application: one dispatcher parses the raw `/v2/` path, checks access, calls the handler.

Handlers for blobs and uploads live in ``registry.blob_api``, manifests in ``registry.manifest_api``,
content discovery in ``registry.discovery``; they all take the shared ``Context``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from modelctl.errors import RegistryError, UsageError
from registry import auth, blob_api, discovery, manifest_api, names
from registry.context import Context
from registry.errors import RegistryHTTPError
from registry.proxy import PullThrough
from registry.storage import Storage
from registry.store_view import StoreView
from registry.uploads import Uploads
from registry.upstream import Upstream

Handler = Callable[[web.Request, Context, names.Route], Awaitable[web.StreamResponse]]

CONTEXT: Final = web.AppKey("registry_context", Context)
_READS: Final = frozenset({"GET", "HEAD"})
_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("ping", "GET"): discovery.ping,
    ("catalog", "GET"): discovery.catalog,
    ("tags", "GET"): discovery.tags,
    ("referrers", "GET"): discovery.referrers,
    ("manifest", "GET"): manifest_api.get,
    ("manifest", "PUT"): manifest_api.put,
    ("manifest", "DELETE"): manifest_api.delete,
    ("blob", "GET"): blob_api.get,
    ("blob", "DELETE"): blob_api.delete,
    ("uploads", "POST"): blob_api.start_upload,
    ("upload", "GET"): blob_api.upload_status,
    ("upload", "PATCH"): blob_api.patch_upload,
    ("upload", "PUT"): blob_api.finish_upload,
    ("upload", "DELETE"): blob_api.cancel_upload,
}


async def _dispatch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    try:
        route = names.parse_path(request.raw_path)
        if route is None:
            raise RegistryHTTPError("UNSUPPORTED", "no such endpoint", status=404)
        write = request.method not in _READS
        if ctx.auth is not None:
            await ctx.auth.check(request.headers.get("Authorization"), write=write)
        method = "GET" if request.method == "HEAD" else request.method
        handler = _HANDLERS.get((route.kind, method))
        if handler is None:
            allowed = sorted({m for (kind, m) in _HANDLERS if kind == route.kind})
            raise RegistryHTTPError(
                "UNSUPPORTED",
                f"{request.method} is not supported here",
                headers={"Allow": ", ".join(allowed)},
            )
        if write and ctx.read_only is not None:
            raise RegistryHTTPError("UNSUPPORTED", ctx.read_only)
        return await handler(request, ctx, route)
    except names.GrammarError as exc:
        return RegistryHTTPError(exc.code, exc.message).response()
    except RegistryHTTPError as exc:
        return exc.response()


async def _add_version_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Docker-Distribution-API-Version"] = "registry/2.0"


def create_app(
    *,
    root: Path | None = None,
    store: Path | None = None,
    htpasswd: Path | None = None,
    proxy: str | None = None,
    allow_anonymous_pull: bool = False,
    tag_ttl: float = 30.0,
    allow_sparse: bool = False,
) -> web.Application:
    """Build the registry application over the storage root ``root`` (created if missing), or, with ``store``,
    over a modelctl store served read-only (pulls only).

    ``allow_sparse`` accepts manifests whose blobs or child manifests were not pushed (see ``Context``).
    Start-up mistakes (a root that is a file, an unreadable or non-bcrypt htpasswd) raise UsageError."""
    authenticator = (
        auth.Authenticator(auth.load_htpasswd(htpasswd), allow_anonymous_pull=allow_anonymous_pull)
        if htpasswd is not None
        else None
    )
    if store is not None:
        if root is not None or proxy is not None:
            raise UsageError("--store serves a modelctl store as it is", hint="leave out --root and --proxy")
        context = Context(content=_store_view(store), auth=authenticator)
    else:
        context = _storage_context(root or Path("registry-data"), proxy, tag_ttl, allow_sparse, authenticator)
    app = web.Application(handler_args={"max_field_size": 16384})
    app[CONTEXT] = context
    app.router.add_route("*", "/v2", _dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", _dispatch)
    app.on_response_prepare.append(_add_version_header)
    pull_through = context.proxy
    if pull_through is not None:

        async def _start(_app: web.Application) -> None:
            pull_through.start()

        async def _stop(_app: web.Application) -> None:
            await pull_through.close()

        app.on_startup.append(_start)
        app.on_cleanup.append(_stop)
    return app


def _storage_context(
    root: Path, proxy: str | None, tag_ttl: float, allow_sparse: bool, authenticator: auth.Authenticator | None
) -> Context:
    try:
        storage = Storage(root)
    except OSError as exc:
        raise UsageError(
            f"cannot use --root {root}: {exc.strerror or exc}", hint="give a directory (it is created if missing)"
        ) from None
    uploads = Uploads(storage)
    pull_through = PullThrough(Upstream(proxy), storage, uploads, tag_ttl=tag_ttl) if proxy else None
    return Context(
        content=storage,
        storage=storage,
        uploads=uploads,
        auth=authenticator,
        proxy=pull_through,
        allow_sparse=allow_sparse,
    )


def _store_view(store: Path) -> StoreView:
    try:
        view = StoreView(store)
    except FileNotFoundError:
        raise UsageError(
            f"{store} is not a modelctl store (no index.json)",
            hint="pull a model first, or point MODELCTL_HOME at the store to serve",
        ) from None
    view.recover()
    return view


def _listen(host: str, port: int) -> socket.socket:
    """Bind ``host:port``: RegistryError when the address is in use, UsageError when it cannot be bound at all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return socket.create_server((host, port), family=family, backlog=1024, reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RegistryError(
                f"cannot listen on {shown}: address already in use",
                hint="stop the server using it or pick another --addr (port 0 picks a free one)",
            ) from None
        raise UsageError(
            f"cannot listen on {shown}: {os.strerror(exc.errno) if exc.errno else exc}",
            hint="give a local HOST:PORT in --addr",
        ) from None


async def _serve(app: web.Application, host: str, port: int) -> None:
    sock = _listen(host, port)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    *,
    host: str,
    port: int,
    root: Path | None = None,
    store: Path | None = None,
    htpasswd: Path | None = None,
    proxy: str | None = None,
    allow_anonymous_pull: bool = False,
    tag_ttl: float = 30.0,
    allow_sparse: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM. Prints ``listening on http://HOST:PORT`` to stderr once bound
    (port 0 picks a free port, and the line shows which)."""
    app = create_app(
        root=root,
        store=store,
        htpasswd=htpasswd,
        proxy=proxy,
        allow_anonymous_pull=allow_anonymous_pull,
        tag_ttl=tag_ttl,
        allow_sparse=allow_sparse,
    )
    asyncio.run(_serve(app, host, port))
