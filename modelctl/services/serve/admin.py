"""modelctl's own endpoints: the chat page at ``/``, and ``/modelctl/ps``, ``/modelctl/stop``, ``/modelctl/fit``
(what ``modelctl ps`` and ``modelctl stop`` ask, and the page's fit verdict)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from aiohttp import web

from modelctl.fit.settings import RunSettings
from modelctl.services.fit import fit_reference
from modelctl.services.serve import requests as req
from modelctl.services.serve.state import Server, server


@functools.cache
def _page() -> bytes:
    return resources.files(__package__).joinpath("chat.html").read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            # the page loads nothing from elsewhere and talks only to this server
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        },
    )


async def ps(request: web.Request) -> web.Response:
    return web.json_response({"models": server(request).pool.loaded()})


async def stop(request: web.Request) -> web.Response:
    srv = server(request)
    doc = await req.body(request)
    stopped = await srv.pool.stop(req.model_name(doc))
    return web.json_response({"stopped": stopped})


async def fit(request: web.Request) -> web.Response:
    """The fit check of a model as this server would load it, and whether it is loaded now."""
    srv = server(request)
    name = req.model_name(dict(request.query))
    found = await srv.pool.call(srv.catalog.identify, name)
    slot = srv.pool.slots.get(found.key)
    loaded = slot is not None and slot.state == "ready"
    if slot is not None:
        report = dict(slot.placement.fit)
    else:
        report = await srv.pool.call(_fit, srv, found.name)
    report["model"] = name
    report["loaded"] = loaded
    return web.json_response(report)


def _fit(srv: Server, name: str) -> dict[str, Any]:
    options = srv.options.run
    settings = RunSettings(
        n_ctx=options.ctx_size,
        cache_type=options.cache_type,
        gpu_layers=options.gpu_layers,
        cpu_buffers=srv.config.cpu_buffers,
    )
    devices = srv.budget.devices(srv.pool.held())
    return fit_reference(srv.config, name, settings, devices=devices).to_json()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", page),
        web.get("/modelctl/ps", ps),
        web.post("/modelctl/stop", stop),
        web.get("/modelctl/fit", fit),
    ]
