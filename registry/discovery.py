"""Content discovery: the `/v2/` ping, `_catalog`, tags lists (n/last, Link) and the referrers API."""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from modelctl.oci import mediatypes as mt
from registry import names
from registry.context import Context
from registry.errors import RegistryHTTPError

MAX_PAGE: Final = 10_000


def paginate(items: Sequence[str], query: Mapping[str, str], base: str) -> tuple[list[str], str | None]:
    """Apply ``n``/``last`` to a sorted list; returns the page and the ``Link`` header for the next one."""
    last = query.get("last")
    start = bisect.bisect_right(items, last) if last else 0
    n_param = query.get("n")
    if n_param is None:
        n = MAX_PAGE
    elif n_param.isdigit():
        n = min(int(n_param), MAX_PAGE)
    else:
        raise RegistryHTTPError("UNSUPPORTED", f"n must be a non-negative integer, got {n_param[:50]!r}", status=400)
    if n == 0:
        return [], None
    page = list(items[start : start + n])
    if start + n >= len(items):
        return page, None
    return page, f'<{base}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'


def _json(
    body: Any, *, headers: Mapping[str, str] | None = None, content_type: str = "application/json"
) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type=content_type, headers=headers)


async def ping(_request: web.Request, _ctx: Context, _route: names.Route) -> web.StreamResponse:
    return _json({})


async def catalog(request: web.Request, ctx: Context, _route: names.Route) -> web.StreamResponse:
    page, link = paginate(ctx.content.repositories(), request.query, "/v2/_catalog")
    return _json({"repositories": page}, headers={"Link": link} if link else None)


async def tags(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    name = route.name
    if ctx.proxy is not None:
        answer = await ctx.proxy.tags(name, request.query_string)
        if answer is not None:
            status, body, link = answer
            if status in (401, 403):
                raise RegistryHTTPError("NAME_UNKNOWN", detail={"name": name})
            headers = {"Link": link} if link and status == 200 else None
            return web.Response(status=status, body=body, content_type="application/json", headers=headers)
    found = ctx.content.tags(name, ns=request.query.get("ns"))
    if found is None:
        raise RegistryHTTPError("NAME_UNKNOWN", detail={"name": name})
    page, link = paginate(found, request.query, f"/v2/{quote(name)}/tags/list")
    return _json({"name": name, "tags": page}, headers={"Link": link} if link else None)


async def referrers(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    descriptors = ctx.content.referrers(route.name, route.digest)
    headers: dict[str, str] = {}
    artifact_type = request.query.get("artifactType")
    if artifact_type is not None:
        descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    return _json(index, headers=headers, content_type=mt.OCI_INDEX)
