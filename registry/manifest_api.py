"""Manifest endpoints: GET/HEAD by tag or digest with content negotiation, PUT with validation, DELETE."""

from __future__ import annotations

import asyncio

from aiohttp import web

from registry import manifests, names
from registry.context import Context
from registry.errors import RegistryHTTPError


def acceptable(accept_headers: list[str], media_type: str) -> bool:
    """Whether the client's Accept list admits ``media_type`` (no Accept header admits anything)."""
    ranges = [r.split(";", 1)[0].strip().lower() for h in accept_headers for r in h.split(",")]
    ranges = [r for r in ranges if r]
    if not ranges:
        return True
    major = media_type.split("/", 1)[0]
    return any(r in ("*/*", f"{major}/*", media_type) for r in ranges)


async def get(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    name, reference = route.name, route.ref
    if ctx.proxy is not None:
        digest = await ctx.proxy.resolve(name, reference)
    elif names.is_digest(reference):
        digest = route.digest
    else:
        digest = ctx.storage.resolve_tag(name, reference)
    media_type = ctx.storage.revision_media_type(name, digest) if digest else None
    raw = ctx.storage.read_manifest(digest) if digest and media_type else None
    if digest is None or media_type is None or raw is None:
        raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"name": name, "reference": reference})
    if not acceptable(request.headers.getall("Accept", []), media_type):
        raise RegistryHTTPError(
            "MANIFEST_UNKNOWN",
            f"the manifest is {media_type}, which the Accept header does not admit",
            detail={"name": name, "reference": reference, "mediaType": media_type},
        )
    headers = {"Docker-Content-Digest": digest, "ETag": f'"{digest}"', "Content-Type": media_type}
    return web.Response(body=raw, headers=headers)


async def put(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    name, reference = route.name, route.ref
    length = request.content_length
    if length is not None and length > manifests.MAX_MANIFEST_BYTES:
        raise RegistryHTTPError("SIZE_INVALID", f"manifest exceeds {manifests.MAX_MANIFEST_BYTES} bytes", status=413)
    raw = await manifests.read_limited(request.content.iter_any())
    by_digest = names.stored_digest(reference)
    algorithm = by_digest.algorithm if by_digest is not None else names.STORED_ALGORITHM
    info = manifests.parse(raw, request.headers.get("Content-Type"), algorithm)
    if by_digest is not None and by_digest != info.digest:
        raise RegistryHTTPError("DIGEST_INVALID", detail={"reference": reference, "actual": info.digest})
    storage = ctx.storage
    missing = [d for d in info.blobs if not storage.blob_linked(name, d)]
    missing += [d for d in info.manifests if storage.revision_media_type(name, d) is None]
    if missing:
        raise RegistryHTTPError(
            "MANIFEST_BLOB_UNKNOWN",
            f"manifest references {len(missing)} blob(s) or manifest(s) unknown to {name}",
            detail={"digests": sorted(set(missing))},
        )
    tag = None if by_digest is not None else reference
    await asyncio.get_running_loop().run_in_executor(None, storage.put_manifest, name, raw, info, tag)
    headers = {"Location": f"/v2/{name}/manifests/{info.digest}", "Docker-Content-Digest": info.digest}
    if info.subject is not None:
        headers["OCI-Subject"] = info.subject
    return web.Response(status=201, headers=headers)


async def delete(_request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    """By digest: the manifest and every tag on it. By tag: the tag only (untag)."""
    name, reference = route.name, route.ref
    if names.is_digest(reference):
        found = ctx.storage.delete_manifest(name, route.digest)
    else:
        found = ctx.storage.delete_tag(name, reference)
    if not found:
        raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"name": name, "reference": reference})
    return web.Response(status=202)
