"""Pull-through cache: misses are fetched from an upstream registry, verified, stored, then served locally.

Tags are resolved upstream (the answer is kept for a short TTL, and the last known one is used while the
upstream is unreachable); digests are immutable: anything by digest that is stored is served without asking.
The upstream's 401 challenge is answered with the Bearer token flow (or Basic with credentials given in the
upstream URL, ``https://user:password@host``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, urlsplit

import aiohttp

from modelctl.digest import Digest
from modelctl.errors import IntegrityError
from modelctl.oci import mediatypes as mt
from modelctl.oci import safejson
from registry import manifests, names
from registry.errors import RegistryHTTPError
from registry.storage import Storage
from registry.uploads import Uploads

_ACCEPT: Final = ", ".join(mt.MANIFEST_ACCEPT)
_CHALLENGE_PARAM: Final = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')
_TOKEN_LEEWAY_S: Final = 10.0
MAX_TOKEN_BODY: Final = 1 << 20
"""A token answer is a few KiB; a larger one is refused instead of read into memory."""


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or answered with a server error."""


def _unavailable(message: str) -> RegistryHTTPError:
    return RegistryHTTPError("UNAVAILABLE", message)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


class Upstream:
    """An HTTP client for one upstream registry, with its token cache."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"proxy URL must be http(s)://host[:port], got {url!r}")
        self.base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._basic = aiohttp.BasicAuth(parts.username, parts.password or "") if parts.username is not None else None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=60)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, name: str, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """Send a request, answering one 401 challenge; the caller releases the response."""
        assert self._session is not None, "Upstream.start() was not awaited"
        scope = f"repository:{name}:pull"
        for attempt in (1, 2):
            sent = dict(headers or {})
            token = self._tokens.get(scope)
            if token is not None and token[1] > time.monotonic():
                sent["Authorization"] = f"Bearer {token[0]}"
            try:
                resp = await self._session.request(
                    method, self.base + path, headers=sent, auth=None if token else self._basic
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamUnavailable(f"{self.base}: {exc!r}") from None
            if resp.status >= 500:
                resp.release()
                raise UpstreamUnavailable(f"{self.base}{path}: HTTP {resp.status}")
            if resp.status != 401 or attempt == 2:
                return resp
            scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if scheme != "bearer" or "realm" not in params:
                return resp
            resp.release()
            await self._fetch_token(params, scope)
        raise AssertionError("unreachable")

    async def _fetch_token(self, params: Mapping[str, str], scope: str) -> None:
        assert self._session is not None
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        try:
            async with self._session.get(params["realm"], params=query, auth=self._basic) as resp:
                if resp.status != 200:
                    return
                raw = await resp.content.read(MAX_TOKEN_BODY + 1)
            body = safejson.loads(raw, what="token answer", max_size=MAX_TOKEN_BODY)  # json.loads would recurse
        except (TimeoutError, aiohttp.ClientError, OSError, IntegrityError) as exc:
            raise UpstreamUnavailable(f"token service {params['realm']}: {exc!r}") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if isinstance(token, str):
            expires_in = body.get("expires_in")
            ttl = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 60.0
            self._tokens[scope] = (token, time.monotonic() + max(ttl - _TOKEN_LEEWAY_S, 1.0))


class PullThrough:
    """The cache: resolves and fetches through ``upstream`` into ``storage``."""

    def __init__(self, upstream: Upstream, storage: Storage, uploads: Uploads, *, tag_ttl: float) -> None:
        self.upstream = upstream
        self.storage = storage
        self.uploads = uploads
        self.tag_ttl = tag_ttl
        self._tags: dict[tuple[str, str], tuple[Digest, float]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}

    # -- manifests -----------------------------------------------------------------------------------
    async def resolve(self, name: str, reference: str) -> Digest | None:
        """The digest of ``reference`` in ``name``, stored locally on return; None when upstream has none."""
        pinned = names.stored_digest(reference)
        if pinned is not None:
            if self.storage.revision_media_type(name, pinned) is not None:
                return pinned
            try:
                return await self._fetch_manifest(name, reference)
            except UpstreamUnavailable as exc:
                raise _unavailable(str(exc)) from None
        cached = self._tags.get((name, reference))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            digest = await self._resolve_tag_upstream(name, reference)
        except UpstreamUnavailable as exc:
            local = self.storage.resolve_tag(name, reference)
            if local is None:
                raise _unavailable(f"upstream unreachable and {name}:{reference} not cached: {exc}") from None
            return local
        if digest is not None:
            self._tags[(name, reference)] = (digest, time.monotonic() + self.tag_ttl)
        return digest

    async def _resolve_tag_upstream(self, name: str, tag: str) -> Digest | None:
        path = f"/v2/{name}/manifests/{tag}"
        resp = await self.upstream.request("HEAD", path, name=name, headers={"Accept": _ACCEPT})
        resp.release()
        if resp.status in (401, 403, 404):
            return None
        digest = names.stored_digest(resp.headers.get("Docker-Content-Digest", ""))
        if resp.status == 200 and digest is not None and self.storage.revision_media_type(name, digest):
            self.storage.tag_manifest(name, tag, digest)
            return digest
        return await self._fetch_manifest(name, tag)

    async def _fetch_manifest(self, name: str, reference: str) -> Digest | None:
        path = f"/v2/{name}/manifests/{reference}"
        resp = await self.upstream.request("GET", path, name=name, headers={"Accept": _ACCEPT})
        try:
            if resp.status in (401, 403, 404):
                return None
            if resp.status != 200:
                raise _unavailable(f"upstream answered {resp.status} for {path}")
            raw = await manifests.read_limited(resp.content.iter_any())
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _unavailable(f"upstream {path}: {exc!r}") from None
        finally:
            resp.release()
        pinned = names.stored_digest(reference)
        claimed = reference if pinned is not None else resp.headers.get("Docker-Content-Digest")
        algorithm = pinned.algorithm if pinned is not None else names.STORED_ALGORITHM
        info = manifests.parse(raw, resp.headers.get("Content-Type"), algorithm)
        if claimed and claimed != info.digest:
            raise _unavailable(f"upstream manifest {path} does not match its digest {claimed}")
        tag = None if pinned is not None else reference
        await asyncio.get_running_loop().run_in_executor(None, self.storage.put_manifest, name, raw, info, tag)
        return info.digest

    # -- blobs ---------------------------------------------------------------------------------------
    async def head_blob(self, name: str, digest: Digest) -> int | None:
        """The size of an uncached blob as the upstream reports it; None when it has none."""
        try:
            resp = await self.upstream.request("HEAD", f"/v2/{name}/blobs/{digest}", name=name)
        except UpstreamUnavailable as exc:
            raise _unavailable(str(exc)) from None
        resp.release()
        if resp.status != 200:
            return None
        return resp.content_length if resp.content_length is not None else 0

    async def fetch_blob(self, name: str, digest: Digest) -> bool:
        """Make ``digest`` readable through ``name``; False when the upstream does not have it.
        Concurrent requests for one blob share one download."""
        if self.storage.has_blob(digest):
            if await self.head_blob(name, digest) is None:
                return False
            self.storage.link_blob(name, digest)
            return True
        key = (name, digest)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._download(name, digest))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        await asyncio.shield(task)
        return self.storage.blob_linked(name, digest)

    async def _download(self, name: str, digest: Digest) -> None:
        path = f"/v2/{name}/blobs/{digest}"
        try:
            resp = await self.upstream.request("GET", path, name=name)
        except UpstreamUnavailable as exc:
            raise _unavailable(str(exc)) from None
        try:
            if resp.status in (401, 403, 404):
                return
            if resp.status != 200:
                raise _unavailable(f"upstream answered {resp.status} for {path}")
            upload = self.uploads.create(name, digest.algorithm)
            try:
                await self.uploads.append(upload, resp.content, expected=resp.content_length)
                await self.uploads.complete(upload, digest)
            except RegistryHTTPError as exc:
                raise _unavailable(f"upstream blob {path} failed verification: {exc.message}") from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise _unavailable(f"upstream {path}: {exc!r}") from None
            finally:
                if not upload.done:
                    self.uploads.cancel(upload)
        finally:
            resp.release()

    # -- tags ----------------------------------------------------------------------------------------
    async def tags(self, name: str, query: str) -> tuple[int, bytes, str | None] | None:
        """The upstream's tag list answer (status, body, Link); None when the upstream is unreachable."""
        path = f"/v2/{quote(name)}/tags/list" + (f"?{query}" if query else "")
        try:
            resp = await self.upstream.request("GET", path, name=name)
        except UpstreamUnavailable:
            return None
        try:
            body = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
        finally:
            resp.release()
        return resp.status, body, resp.headers.get("Link")
