"""Pull-through cache: misses are fetched from an upstream registry, streamed to the clients, verified and stored.

Tags are resolved upstream (the answer is kept for a short TTL, and the last known one is used while the
upstream is unreachable); digests are immutable: anything by digest that is stored is served without asking.
A blob miss starts one upstream GET, whatever the number of clients asking: its bytes are written to an upload
file and hashed as they arrive, and every client reads that file as it grows (:mod:`registry.fetch`), the first
byte going out as soon as it came in. When the upstream's bytes end, the digest decides: the file is renamed into
the shared blob store, or deleted and every client's connection cut. The connection to the upstream is the
modelctl client's own (:mod:`registry.upstream`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from functools import partial
from typing import Final
from urllib.parse import quote

import httpx

from modelctl.digest import Digest
from modelctl.oci import mediatypes as mt
from registry import manifests, names
from registry.errors import RegistryHTTPError
from registry.fetch import Fetch
from registry.storage import Storage
from registry.uploads import Upload, Uploads, write_hashed
from registry.upstream import Upstream, UpstreamUnavailable, content_length, in_thread

_ACCEPT: Final = ", ".join(mt.MANIFEST_ACCEPT)
_NOT_THERE: Final = frozenset({401, 403, 404})
MAX_TAGS_BODY: Final = 16 << 20
"""A tags list larger than this is not passed through (10,000 tags are about 300 KiB)."""

log = logging.getLogger("registry")


def _unavailable(message: str) -> RegistryHTTPError:
    return RegistryHTTPError("UNAVAILABLE", message)


class PullThrough:
    """The cache: resolves and fetches through ``upstream`` into ``storage``."""

    def __init__(self, upstream: Upstream, storage: Storage, uploads: Uploads, *, tag_ttl: float) -> None:
        self.upstream = upstream
        self.storage = storage
        self.uploads = uploads
        self.tag_ttl = tag_ttl
        self._tags: dict[tuple[str, str], tuple[Digest, float]] = {}
        self._inflight: dict[tuple[str, Digest], Fetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = threading.Event()

    def start(self) -> None:
        self.upstream.start()

    async def close(self) -> None:
        """Stop the downloads in flight (their uploads are removed) and close the upstream's connections."""
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self.upstream.close()

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
        resp = await in_thread(partial(self.upstream.head, path, name=name, headers={"Accept": _ACCEPT}))
        if resp.status_code in _NOT_THERE:
            return None
        digest = names.stored_digest(resp.headers.get("Docker-Content-Digest", ""))
        if resp.status_code == 200 and digest is not None and self.storage.revision_media_type(name, digest):
            self.storage.tag_manifest(name, tag, digest)
            return digest
        return await self._fetch_manifest(name, tag)

    async def _fetch_manifest(self, name: str, reference: str) -> Digest | None:
        path = f"/v2/{name}/manifests/{reference}"
        read = partial(
            self.upstream.read, path, name=name, limit=manifests.MAX_MANIFEST_BYTES, headers={"Accept": _ACCEPT}
        )
        resp, raw = await in_thread(read)
        if resp.status_code in _NOT_THERE:
            return None
        if resp.status_code != 200:
            raise _unavailable(f"upstream answered {resp.status_code} for {path}")
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
            resp = await in_thread(partial(self.upstream.head, f"/v2/{name}/blobs/{digest}", name=name))
        except UpstreamUnavailable as exc:
            raise _unavailable(str(exc)) from None
        if resp.status_code != 200:
            return None
        return content_length(resp) or 0

    async def fetch_blob(self, name: str, digest: Digest) -> Fetch | bool:
        """Make ``digest`` readable through ``name``: True once it is stored and linked, False when the upstream
        does not have it, else the download in flight to stream from. Concurrent requests share one download."""
        if self.storage.has_blob(digest):
            if await self.head_blob(name, digest) is None:
                return False
            self.storage.link_blob(name, digest)
            return True
        key = (name, digest)
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = Fetch(digest)
            self._inflight[key] = fetch
            task = asyncio.ensure_future(self._download(name, fetch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not await asyncio.shield(fetch.found):
            return False
        return fetch

    async def _download(self, name: str, fetch: Fetch) -> None:
        error: str | None = "the registry stopped"
        try:
            error = await self._receive(name, fetch)
        finally:
            self._inflight.pop((name, fetch.digest), None)
            fetch.finish(error)

    async def _receive(self, name: str, fetch: Fetch) -> str | None:
        """Fetch, store and verify; None when the blob is stored, else why not."""
        path = f"/v2/{name}/blobs/{fetch.digest}"
        try:
            resp = await in_thread(partial(self.upstream.open, "GET", path, name=name))
        except UpstreamUnavailable as exc:
            return str(exc)
        upload: Upload | None = None
        try:
            if resp.status_code in _NOT_THERE:
                fetch.absent()
                return f"{path} is not in the upstream"
            if resp.status_code != 200:
                return f"upstream answered {resp.status_code} for {path}"
            upload = self.uploads.create(name, fetch.digest.algorithm)
            size = content_length(resp)
            fetch.start(upload.data, size)
            loop = asyncio.get_running_loop()
            upload.offset = await in_thread(partial(self._copy, resp, upload, fetch, size, loop))
            if size is not None and upload.offset != size:
                return f"upstream {path} ended after {upload.offset} of {size} bytes"
            await self.uploads.complete(upload, fetch.digest)
            return None
        except RegistryHTTPError as exc:
            log.warning("registry: upstream blob %s failed verification (%s): deleted", path, exc.detail)
            return f"upstream blob {path} failed verification"
        except (UpstreamUnavailable, httpx.HTTPError, OSError) as exc:
            return f"upstream {path}: {exc}"
        finally:
            if upload is not None and not upload.done:
                self.uploads.cancel(upload)
            resp.close()

    def _copy(
        self, resp: httpx.Response, upload: Upload, fetch: Fetch, size: int | None, loop: asyncio.AbstractEventLoop
    ) -> int:
        """Runs in a thread: append the body to the upload, hashing, and tell the readers after each piece."""
        fd = os.open(upload.data, os.O_WRONLY | os.O_APPEND)
        received = 0
        try:
            for chunk in resp.iter_raw():
                if self._closing.is_set():
                    raise UpstreamUnavailable("the registry is stopping")
                received += len(chunk)
                if size is not None and received > size:
                    raise UpstreamUnavailable(f"the upstream sent more than the {size} bytes it announced")
                write_hashed(fd, upload.hasher, [chunk])
                loop.call_soon_threadsafe(fetch.advance, len(chunk))
        finally:
            os.close(fd)
        return received

    # -- tags ----------------------------------------------------------------------------------------
    async def tags(self, name: str, query: str) -> tuple[int, bytes, str | None] | None:
        """The upstream's tag list answer (status, body, Link); None when the upstream is unreachable."""
        path = f"/v2/{quote(name)}/tags/list" + (f"?{query}" if query else "")
        try:
            resp, body = await in_thread(partial(self.upstream.read, path, name=name, limit=MAX_TAGS_BODY))
        except UpstreamUnavailable:
            return None
        return resp.status_code, body, resp.headers.get("Link")
