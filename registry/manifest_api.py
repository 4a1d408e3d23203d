"""Manifest endpoints: GET/HEAD by tag or digest with content negotiation, PUT with validation (and ``?tag=``
parameters), DELETE."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from registry import manifests, names
from registry.context import Context
from registry.errors import RegistryHTTPError
from registry.storage import Storage


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
        digest = ctx.content.resolve_tag(name, reference, ns=request.query.get("ns"))
    media_type = ctx.content.revision_media_type(name, digest) if digest else None
    raw = ctx.content.read_manifest(digest) if digest and media_type else None
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


MAX_TAG_PARAMS: Final = 100
"""``?tag=`` parameters one manifest PUT may carry (the spec asks for at least 10; beyond: 414)."""


def _tag_params(request: web.Request) -> list[str]:
    """The ``?tag=`` parameters of a manifest PUT, validated and without repeats (first occurrence kept)."""
    tags = list(dict.fromkeys(request.query.getall("tag", [])))
    if len(tags) > MAX_TAG_PARAMS:
        raise RegistryHTTPError(
            "UNSUPPORTED", f"{len(tags)} tag parameters: at most {MAX_TAG_PARAMS} per request", status=414
        )
    for tag in tags:
        if not names.is_tag(tag):
            raise RegistryHTTPError("NAME_INVALID", f"invalid tag {tag[:200]!r} in the tag parameter")
    return tags


def _store(storage: Storage, name: str, raw: bytes, info: manifests.ManifestInfo, tags: list[str]) -> None:
    """The manifest, then each tag (runs in a worker thread: every write is fsynced)."""
    storage.put_manifest(name, raw, info, tags[0] if tags else None)
    for tag in tags[1:]:
        storage.tag_manifest(name, tag, info.digest)


async def put(request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    """PUT by tag or digest; ``?tag=`` parameters tag the manifest too (answered with ``OCI-Tag``)."""
    name, reference = route.name, route.ref
    storage, _ = ctx.writable()
    length = request.content_length
    if length is not None and length > manifests.MAX_MANIFEST_BYTES:
        raise RegistryHTTPError("SIZE_INVALID", f"manifest exceeds {manifests.MAX_MANIFEST_BYTES} bytes", status=413)
    tag_params = _tag_params(request)
    raw = await manifests.read_limited(request.content.iter_any())
    by_digest = names.stored_digest(reference)
    algorithm = by_digest.algorithm if by_digest is not None else names.STORED_ALGORITHM
    info = manifests.parse(raw, request.headers.get("Content-Type"), algorithm)
    if by_digest is not None and by_digest != info.digest:
        raise RegistryHTTPError("DIGEST_INVALID", detail={"reference": reference, "actual": info.digest})
    if not ctx.allow_sparse:
        missing = [d for d in info.blobs if not storage.blob_linked(name, d)]
        missing += [d for d in info.manifests if storage.revision_media_type(name, d) is None]
        if missing:
            raise RegistryHTTPError(
                "MANIFEST_BLOB_UNKNOWN",
                f"manifest references {len(missing)} blob(s) or manifest(s) unknown to {name}",
                detail={"digests": sorted(set(missing))},
            )
    tags = tag_params if by_digest is not None else list(dict.fromkeys([reference, *tag_params]))
    await asyncio.get_running_loop().run_in_executor(None, _store, storage, name, raw, info, tags)
    headers: CIMultiDict[str] = CIMultiDict(
        {"Location": f"/v2/{name}/manifests/{info.digest}", "Docker-Content-Digest": info.digest}
    )
    if info.subject is not None:
        headers["OCI-Subject"] = info.subject
    for tag in tag_params:
        headers.add("OCI-Tag", tag)
    return web.Response(status=201, headers=headers)


async def delete(_request: web.Request, ctx: Context, route: names.Route) -> web.StreamResponse:
    """By digest: the manifest and every tag on it. By tag: the tag only (untag)."""
    name, reference = route.name, route.ref
    storage, _ = ctx.writable()
    if names.is_digest(reference):
        found = storage.delete_manifest(name, route.digest)
    else:
        found = storage.delete_tag(name, reference)
    if not found:
        raise RegistryHTTPError("MANIFEST_UNKNOWN", detail={"name": name, "reference": reference})
    return web.Response(status=202)
