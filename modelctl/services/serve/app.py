"""The HTTP server: the aiohttp application (routes, guard, error rendering) and the loop that runs it.

One process serves every API; llama.cpp runs in the pool's worker processes. aiohttp cancels a handler whose
client disconnects (``handler_cancellation``), which is how a closed connection stops its generation.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from modelctl.config import Config
from modelctl.errors import AuthError, ModelctlError, UsageError
from modelctl.services.run import Prepared
from modelctl.services.serve import admin, anthropic_api, ollama_api, openai_api
from modelctl.services.serve.budget import Budget
from modelctl.services.serve.catalog import Catalog
from modelctl.services.serve.guard import Handler, cors_headers, guard
from modelctl.services.serve.options import ServeOptions, url
from modelctl.services.serve.pool import Event, Pool
from modelctl.services.serve.replies import dialect, error_response
from modelctl.services.serve.state import SERVER, Server

MAX_BODY = 64 << 20
THREADS = 64
"""Threads for blocking work: one per answer being generated, plus loads, unloads and store reads."""


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ModelctlError as exc:
        response = error_response(exc, dialect(request.path))
        if isinstance(exc, AuthError):
            page = request.path == "/" and request.method == "GET"
            response.headers["WWW-Authenticate"] = 'Basic realm="modelctl"' if page else "Bearer"
        return response
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        failure = ModelctlError(f"internal error: {type(exc).__name__}: {exc}", hint="see the server's log")
        return error_response(failure, dialect(request.path))


def build(state: Server) -> web.Application:
    app = web.Application(middlewares=[_errors, guard], client_max_size=MAX_BODY)
    app[SERVER] = state
    app.on_response_prepare.append(cors_headers)
    for module in (admin, openai_api, anthropic_api, ollama_api):
        app.add_routes(module.routes())
    return app


def listen(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` before anything loads; UsageError (exit 2) when it cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve --host {host}: {exc.strerror}", hint="use an IP address") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=1024)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = "choose another --port" if exc.errno == errno.EADDRINUSE else "give a local address in --host"
        raise UsageError(f"cannot listen on {host}:{port}: {reason}", hint=hint) from None


def run(
    config: Config,
    options: ServeOptions,
    *,
    sock: socket.socket,
    budget: Budget,
    preload: Prepared | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_event: Event | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; ``preload`` is loaded first and kept (``serve REF``)."""
    asyncio.run(_main(config, options, sock, budget, preload, on_ready, on_event))


async def _main(
    config: Config,
    options: ServeOptions,
    sock: socket.socket,
    budget: Budget,
    preload: Prepared | None,
    on_ready: Callable[[str], None] | None,
    on_event: Event | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    executor = ThreadPoolExecutor(THREADS, thread_name_prefix="serve")
    files = (preload.name,) if preload is not None and preload.entry is None else ()
    catalog = Catalog(config, options.run, files=files)
    pool = Pool(
        catalog,
        budget,
        executor=executor,
        keep_alive=options.keep_alive,
        max_queue=options.max_queue,
        force=options.run.force,
        on_event=on_event,
    )
    state = Server(
        config=config,
        options=options,
        catalog=catalog,
        pool=pool,
        budget=budget,
        executor=executor,
        started=time.time(),
    )
    runner = web.AppRunner(build(state), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        pool.start()
        if preload is not None:
            name = catalog.seed(preload)
            async with pool.lease(name, keep_alive=float("inf")):
                pass
        if on_ready is not None:
            host, port = sock.getsockname()[:2]
            on_ready(url(options.host if options.host not in ("0.0.0.0", "::") else str(host), int(port)))
        await stop.wait()
    finally:
        await runner.cleanup()
        await pool.close()
        executor.shutdown(wait=False, cancel_futures=True)
