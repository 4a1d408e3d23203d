"""Blob endpoints: GET/HEAD (sendfile, Range; a pull-through miss streamed as it arrives), DELETE, and uploads
(POST, PATCH, PUT, GET, DELETE)."""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from modelctl.digest import Digest
from registry import fetch, names
from registry.context import Context
from registry.errors import RegistryHTTPError
from registry.fetch import Fetch
from registry.uploads import Upload

_CONTENT_RANGE: Final = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)")


def _created(name: str, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
    )


def _upload_headers(upload: Upload) -> dict[str, str]:
    return {
        "Location": upload.location,
        "Range": upload.range_header,
        "Docker-Upload-UUID": upload.id,
    }


def _blob_headers(digest: Digest, *, ranges: bool = True) -> dict[str, str]:
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": "application/octet-stream",
        "Cache-Control": "max-age=31536000",
    }
    if ranges:
        headers["Accept-Ranges"] = "bytes"
    return headers


async def get(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    name, digest = route.name, route.digest
    if not ctx.content.blob_linked(name, digest):
        if ctx.proxy is None:
            raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": digest})
        if request.method == "HEAD":
            size = await ctx.proxy.head_blob(name, digest)
            if size is None:
                raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": digest})
            headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
            head = web.StreamResponse(headers=headers)
            head.content_length = size
            await head.prepare(request)
            await head.write_eof()
            return head
        outcome = await ctx.proxy.fetch_blob(name, digest)
        if outcome is False:
            raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": digest})
        if isinstance(outcome, Fetch):
            if outcome.size is not None and outcome.size <= fetch.WHOLE_BELOW:
                await outcome.wait_ended()
            if outcome.error is not None:
                raise RegistryHTTPError("UNAVAILABLE", outcome.error)
            if not outcome.verified:
                return await fetch.stream(request, outcome, _blob_headers(digest, ranges=outcome.size is not None))
    return web.FileResponse(ctx.content.blob_path(digest), headers=_blob_headers(digest))


async def delete(_request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    storage, _ = ctx.writable()
    if not storage.unlink_blob(route.name, route.digest):
        raise RegistryHTTPError("BLOB_UNKNOWN", detail={"digest": route.ref})
    return web.Response(status=202)


async def start_upload(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    """POST: mount from another repository, single-request monolithic upload, or a new session."""
    name, query = route.name, request.query
    storage, uploads = ctx.writable()
    mount = query.get("mount")
    if mount is not None:
        mount = names.check_digest(mount)
        source = query.get("from")
        if source is not None:
            names.check_name(source)
        # Without ``from`` any stored blob mounts: access is registry-wide (one htpasswd), so naming a digest
        # reveals nothing a pull of the repository holding it would not.
        if storage.blob_linked(source, mount) if source is not None else storage.has_blob(mount):
            storage.link_blob(name, mount)
            return _created(name, mount)
        # Not mountable: fall back to an upload session, as the spec asks (202).
    claimed = query.get("digest")
    if claimed is None or mount is not None:
        return web.Response(status=202, headers=_upload_headers(uploads.create(name)))
    digest = names.check_digest(claimed)
    upload = uploads.create(name, digest.algorithm)
    try:
        await uploads.append(upload, request.content, expected=request.content_length)
        await uploads.complete(upload, digest)
    finally:
        if not upload.done:
            uploads.cancel(upload)
    return _created(name, digest)


def _check_range(request: web.Request, upload: Upload) -> int | None:
    """Validate ``Content-Range`` against the upload's offset; the chunk length it declares, if any."""
    header = request.headers.get("Content-Range")
    if header is None:
        return request.content_length
    m = _CONTENT_RANGE.fullmatch(header.strip())
    if m is None:
        raise RegistryHTTPError("BLOB_UPLOAD_INVALID", f"malformed Content-Range {header[:100]!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if start != upload.offset or end < start:
        raise RegistryHTTPError(
            "BLOB_UPLOAD_INVALID",
            f"chunk {start}-{end} does not continue the upload at offset {upload.offset}",
            status=416,
            headers=_upload_headers(upload),
        )
    length = end - start + 1
    if request.content_length is not None and request.content_length != length:
        raise RegistryHTTPError(
            "SIZE_INVALID", f"Content-Length {request.content_length} does not match Content-Range {header}"
        )
    return length


async def patch_upload(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    _, uploads = ctx.writable()
    upload = uploads.get(route.name, route.ref)
    async with upload.lock:
        upload = uploads.get(route.name, route.ref)
        expected = _check_range(request, upload)
        await uploads.append(upload, request.content, expected=expected)
        return web.Response(status=202, headers=_upload_headers(upload))


async def finish_upload(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    _, uploads = ctx.writable()
    upload = uploads.get(route.name, route.ref)
    async with upload.lock:
        upload = uploads.get(route.name, route.ref)
        claimed = request.query.get("digest")
        if claimed is None:
            raise RegistryHTTPError("DIGEST_INVALID", "the closing PUT needs ?digest=")
        digest = names.check_digest(claimed)
        expected = _check_range(request, upload)
        if request.can_read_body and expected != 0:
            await uploads.append(upload, request.content, expected=expected)
        await uploads.complete(upload, digest)
    return _created(route.name, digest)


async def upload_status(_request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    _, uploads = ctx.writable()
    upload = uploads.get(route.name, route.ref)
    return web.Response(status=204, headers=_upload_headers(upload))


async def cancel_upload(_request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    _, uploads = ctx.writable()
    upload = uploads.get(route.name, route.ref)
    async with upload.lock:
        uploads.cancel(uploads.get(route.name, route.ref))
    return web.Response(status=204)
