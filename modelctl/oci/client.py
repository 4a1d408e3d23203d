"""RegistryClient: the OCI distribution API (manifests, blobs, tags, referrers, uploads) over httpx.

Reads walk the registry's mirrors that may answer them first (a tag needs a ``resolve`` host, content by digest a
``pull`` one: see :mod:`modelctl.oci.endpoints`), then the upstream, falling back on any failure; the most useful
error wins when all fail (not found / denied beat unreachable). Mirrors that failed a repository's manifest are
asked for its blobs last. A 400/401/403 from where a registry redirected to (an expired pre-signed URL) is a
temporary error: the retry asks the registry again. Small reads retry temporary errors with jittered exponential
backoff that honours ``Retry-After``; ``open_blob`` never retries (the download engine owns its retries).
Everything read is bounded and digest-checked. Safe to share between threads.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from modelctl import digest as _digest
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import AuthError, DigestMismatch, IntegrityError, ModelctlError, NotFound, RegistryError
from modelctl.oci import credentials as _credentials
from modelctl.oci import descriptor as _descriptor
from modelctl.oci import endpoints as _endpoints
from modelctl.oci import mediatypes as mt
from modelctl.oci import transport as _transport
from modelctl.oci.auth import CredentialLookup, RegistryAuth
from modelctl.oci.descriptor import Descriptor, Index, Manifest
from modelctl.oci.endpoints import PULL, RESOLVE, Endpoint
from modelctl.oci.transport import BlobReader
from modelctl.reference import Reference

__all__ = ["BlobReader", "BlobSource", "RegistryClient"]

T = TypeVar("T")

MAX_MANIFEST_SIZE = _descriptor.MAX_MANIFEST
MAX_LIST_PAGE = 16 << 20
MAX_PAGES = 10_000
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
UPLOAD_READ_SIZE = 1 << 20

_KNOWN_MANIFEST_TYPES = frozenset(mt.MANIFEST_ACCEPT)

BlobSource = Iterable[bytes] | bytes | str | os.PathLike[str]


class RegistryClient:
    """Client for OCI registries (and their mirrors) configured by ``config``; a context manager.

    ``transport`` replaces the network (httpx.MockTransport in tests); ``sleep`` is what backoff waits with;
    ``credentials`` replaces the Docker config lookup (``modelctl login`` checks new credentials with it).
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        credentials: CredentialLookup | None = None,
    ) -> None:
        self._config = config
        self._sleep = sleep
        lookup = credentials if credentials is not None else partial(_credentials.lookup, config)
        self._http = _transport.build_client(
            config, auth=RegistryAuth(lookup), transport=transport, mounts=_endpoints.tls_mounts(config)
        )
        self._demoted: dict[tuple[str, str], frozenset[Endpoint]] = {}
        """Per (registry, repository): the endpoints that failed its manifest, asked last for its blobs."""
        self._lock = threading.Lock()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def endpoint_for(self, registry: str) -> str:
        """Base URL of ``registry`` itself (mirrors aside)."""
        return _transport.endpoint_for(self._config, registry)

    # -- reads ---------------------------------------------------------------------------------------------

    def ping(self, registry: str) -> None:
        """Check that ``registry`` speaks the API and that our credentials (if any) are accepted."""
        base = self.endpoint_for(registry)
        host = httpx.URL(base).netloc.decode("ascii")
        request = self._http.build_request("GET", f"{base}/v2/")
        response = _transport.send(self._http, request)
        try:
            if response.status_code != 200:
                raise _transport.error_for(response, what="the registry API", registry=_display(host))
        finally:
            response.close()

    def get_manifest(
        self, ref: Reference, *, accept: Sequence[str] = mt.MANIFEST_ACCEPT
    ) -> tuple[Manifest | Index, str]:
        """The manifest or index ``ref`` names, and its media type (the Content-Type, or the document's own
        ``mediaType`` when the registry sent a generic type such as text/plain)."""

        def fetch(at: Endpoint) -> tuple[Manifest | Index, str]:
            headers = {"Accept": ", ".join(accept)}
            response = self._open(at, ref, "GET", f"manifests/{ref.identifier}", what=str(ref), headers=headers)
            try:
                body = _transport.read_bounded(response, MAX_MANIFEST_SIZE, what=f"manifest of {ref}")
            finally:
                response.close()
            content_type = _transport.media_type(response)
            _verify_manifest(ref, body, response.headers.get("Docker-Content-Digest"))
            known = content_type if content_type in _KNOWN_MANIFEST_TYPES else None
            algorithm = ref.digest.algorithm if ref.digest else _digest.SHA256
            try:
                doc = _descriptor.parse(body, known, algorithm=algorithm, what=f"manifest of {ref}")
            except IntegrityError as exc:
                exc.hint = exc.hint or f"{at.host} serves a broken or hostile manifest; nothing was stored"
                raise
            return doc, known or doc.media_type

        return self._walk(ref, fetch, retry=True, remember=True, capability=_manifest_capability(ref))

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        """The descriptor of ``ref``'s manifest without downloading it; None when it does not exist."""

        def probe(at: Endpoint) -> Descriptor | None:
            headers = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)}
            response = self._open(at, ref, "HEAD", f"manifests/{ref.identifier}", what=str(ref), headers=headers)
            response.close()
            header = response.headers.get("Docker-Content-Digest") or ref.digest
            size = _transport.int_header(response, "Content-Length")
            media_type = _transport.media_type(response)
            if ref.digest and header and header != ref.digest and _algorithm(header) == ref.digest.algorithm:
                raise DigestMismatch(ref.digest, header, what=f"manifest of {ref}")
            digest = _digest.parse(header)
            if digest is None or size is None or media_type not in _KNOWN_MANIFEST_TYPES:
                return None
            return Descriptor(media_type=media_type, digest=digest, size=size)

        try:
            found = self._walk(ref, probe, retry=True, capability=_manifest_capability(ref))
            if found is not None:
                return found
            doc, media_type = self.get_manifest(ref)
        except NotFound:
            return None
        return Descriptor(media_type=media_type, digest=doc.digest, size=len(doc.raw))

    def get_blob(self, ref: Reference, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        """A small blob (a config), read whole: at most ``max_size`` bytes, digest-verified."""
        digest = Digest(digest)
        what = f"blob {digest} of {ref.name}"

        def fetch(at: Endpoint) -> bytes:
            response = self._open(at, ref, "GET", f"blobs/{digest}", what=what)
            try:
                body = _transport.read_bounded(response, max_size, what=what)
            finally:
                response.close()
            actual = _digest.of_bytes(body, digest.algorithm)
            if actual != digest:
                raise DigestMismatch(digest, actual, what=what)
            return body

        return self._walk(ref, fetch, retry=True, sticky=True)

    def blob_size(self, ref: Reference, digest: Digest) -> int:
        """The size of a blob, from HEAD (or a one-byte ranged GET when HEAD is refused or says nothing)."""
        digest = Digest(digest)
        what = f"blob {digest} of {ref.name}"

        def probe(at: Endpoint) -> int:
            try:
                response = self._open(at, ref, "HEAD", f"blobs/{digest}", what=what)
                response.close()
                size = _transport.int_header(response, "Content-Length")
                if size is not None:
                    return size
            except NotFound:
                raise
            except ModelctlError:
                pass
            response = self._open(
                at, ref, "GET", f"blobs/{digest}", what=what, headers={"Range": "bytes=0-0"}, ok=(200, 206)
            )
            try:
                reader = _transport.BlobReader(response, start=0, end=None)
            finally:
                response.close()
            if reader.total is None:
                raise RegistryError(f"registry {at.host} did not say the size of {what}", temporary=False)
            return reader.total

        return self._walk(ref, probe, retry=True, sticky=True)

    @contextmanager
    def open_blob(
        self, ref: Reference, digest: Digest, *, start: int = 0, end: int | None = None
    ) -> Iterator[BlobReader]:
        """Open bytes ``start..end`` of a blob to stream (``end`` inclusive, None: to the end); no retries."""
        digest = Digest(digest)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        headers = {"Range": f"bytes={start}-{'' if end is None else end}"} if start or end is not None else {}
        what = f"blob {digest} of {ref.name}"

        def fetch(at: Endpoint) -> BlobReader:
            response = self._open(at, ref, "GET", f"blobs/{digest}", what=what, headers=headers, ok=(200, 206, 416))
            if response.status_code == 416:
                response.close()
                raise _transport.range_refused(response, what=what, start=start)
            try:
                return _transport.BlobReader(response, start=start, end=end)
            except BaseException:
                response.close()
                raise

        reader = self._walk(ref, fetch, retry=False, sticky=True)
        try:
            yield reader
        finally:
            reader.close()

    def tags(self, ref: Reference) -> list[str]:
        """Every tag of ``ref``'s repository, following ``Link`` pagination."""
        out: list[str] = []
        for doc in self._pages(ref, "tags/list", what=f"repository {ref.name}"):  # a listing: resolve hosts
            items = doc.get("tags") or []
            if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
                raise RegistryError(f"registry {ref.registry} sent a malformed tag list", temporary=False)
            out.extend(items)
        return out

    def referrers(self, ref: Reference, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, else the ``sha256-<hex>`` tag."""
        digest = Digest(digest)
        params = {"artifactType": artifact_type} if artifact_type else None
        found: list[Descriptor] = []
        try:
            for doc in self._pages(
                ref, f"referrers/{digest}", what=f"referrers of {digest}", params=params, accept=mt.OCI_INDEX
            ):
                found.extend(_index_entries(doc))
        except (NotFound, RegistryError) as exc:
            if isinstance(exc, RegistryError) and (exc.temporary or exc.status not in (400, 405)):
                raise
            try:
                index, _ = self.get_manifest(ref.with_tag(digest.replace(":", "-")), accept=(mt.OCI_INDEX,))
            except NotFound:
                return []
            found = list(index.manifests) if isinstance(index, Index) else []
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    # -- writes (upstream only, scope pull,push) -----------------------------------------------------------

    def blob_exists(self, ref: Reference, digest: Digest) -> bool:
        digest = Digest(digest)

        def probe(at: Endpoint) -> bool:
            self._open(at, ref, "HEAD", f"blobs/{digest}", what=f"blob {digest} of {ref.name}", push=True).close()
            return True

        try:
            return self._walk(ref, probe, retry=True, push=True)
        except NotFound:
            return False

    def mount_blob(self, ref: Reference, digest: Digest, from_repository: str) -> bool:
        """Ask the registry to link ``digest`` from another repository; False when it would not."""
        digest = Digest(digest)
        at = _endpoints.upstream(self._config, ref.registry)
        scopes = (*_scopes(ref, push=True), f"repository:{from_repository}:pull")
        params = {"mount": digest, "from": from_repository}
        response = self._open(
            at,
            ref,
            "POST",
            "blobs/uploads/",
            what=f"mount of {digest} into {ref.name}",
            push=True,
            params=params,
            scopes=scopes,
            ok=(201, 202),
            content=b"",
        )
        response.close()
        if response.status_code == 201:
            return True
        location = response.headers.get("Location")
        if location:  # an upload session was opened instead: cancel it (best effort)
            self._cancel(ref, response.url.join(location))
        return False

    def upload_blob(
        self, ref: Reference, digest: Digest, size: int, chunks: BlobSource, *, chunk_size: int | None = None
    ) -> None:
        """Upload a blob: one POST + PUT (monolithic), or POST, PATCHes of ``chunk_size`` bytes, PUT."""
        digest = Digest(digest)
        what = f"upload of {digest} to {ref.name}"
        at = _endpoints.upstream(self._config, ref.registry)
        response = self._open(at, ref, "POST", "blobs/uploads/", what=what, push=True, ok=(202,), content=b"")
        response.close()
        location = _transport.location(response, what)
        hashing = _digest.Hashing(digest.algorithm)

        try:
            if chunk_size is None:
                url = location.copy_merge_params({"digest": digest})
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                response = self._send_to(
                    ref, "PUT", url, what, headers=headers, content=hashing.through(_source(chunks))
                )
                _finish(response, (201,), what)
            else:
                offset = 0
                for group in _regroup(hashing.through(_source(chunks)), chunk_size):
                    length = sum(map(len, group))
                    headers = {
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(length),
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    }
                    offset += length
                    response = self._send_to(ref, "PATCH", location, what, headers=headers, content=group)
                    _finish(response, (202,), what)
                    location = _transport.location(response, what)
                _check_upload(digest, size, hashing)
                response = self._send_to(
                    ref,
                    "PUT",
                    location.copy_merge_params({"digest": digest}),
                    what,
                    headers={"Content-Length": "0"},
                )
                _finish(response, (201,), what)
        except RegistryError:
            _check_upload(digest, size, hashing, complete=False)
            raise
        except httpx.StreamConsumed:
            raise RegistryError(f"{what} was refused mid-stream (re-authentication)", temporary=True) from None
        _check_upload(digest, size, hashing)

    def put_manifest(
        self, ref: Reference, data: bytes, media_type: str, *, algorithm: str = _digest.SHA256
    ) -> Digest:
        """Upload a manifest under ``ref``'s tag (or its digest); return the manifest's digest, of ``ref``'s digest's
        algorithm, else of ``algorithm``."""
        digest = _digest.of_bytes(data, ref.digest.algorithm if ref.digest else algorithm)
        if ref.digest and ref.digest != digest:
            raise DigestMismatch(ref.digest, digest, what=f"manifest for {ref}")

        def put(at: Endpoint) -> Digest:
            response = self._open(
                at,
                ref,
                "PUT",
                f"manifests/{ref.tag or digest}",
                what=f"manifest {ref}",
                push=True,
                headers={"Content-Type": media_type},
                content=data,
                ok=(200, 201, 202),
            )
            response.close()
            echoed = response.headers.get("Docker-Content-Digest")
            if echoed and echoed != digest and _algorithm(echoed) == digest.algorithm:
                raise DigestMismatch(digest, echoed, what=f"manifest {ref} (as stored by the registry)")
            return digest

        return self._walk(ref, put, retry=True, push=True)

    # -- internals -----------------------------------------------------------------------------------------

    def _endpoints(self, ref: Reference, *, capability: str, push: bool, sticky: bool) -> list[Endpoint]:
        if push:
            return [_endpoints.upstream(self._config, ref.registry)]
        order = _endpoints.for_registry(self._config, ref.registry, capability)
        if sticky:
            with self._lock:
                demoted = self._demoted.get((ref.registry, ref.repository), frozenset())
            order = [e for e in order if e not in demoted] + [e for e in order if e in demoted]
        return order

    def _walk(
        self,
        ref: Reference,
        op: Callable[[Endpoint], T],
        *,
        retry: bool,
        capability: str = PULL,
        push: bool = False,
        sticky: bool = False,
        remember: bool = False,
        endpoints: Sequence[Endpoint] | None = None,
    ) -> T:
        """Run ``op`` on each endpoint in turn until one succeeds; ``remember``: the ones that failed before it are
        asked last for the repository's blobs (``sticky``)."""
        attempts = 1 + (max(0, self._config.retries) if retry else 0)
        for attempt in range(attempts):
            failures: list[ModelctlError] = []
            failed: list[Endpoint] = []
            for at in endpoints or self._endpoints(ref, capability=capability, push=push, sticky=sticky):
                try:
                    result = op(at)
                except ModelctlError as exc:
                    failures.append(exc)
                    failed.append(at)
                    continue
                if remember:
                    with self._lock:
                        self._demoted[(ref.registry, ref.repository)] = frozenset(failed)
                return result
            best = max(enumerate(failures), key=lambda item: (_usefulness(item[1]), item[0]))[1]
            if attempt + 1 >= attempts or not (isinstance(best, RegistryError) and best.temporary):
                raise best
            self._sleep(_backoff(attempt, failures))
        raise AssertionError("unreachable")

    def _open(
        self,
        at: Endpoint,
        ref: Reference,
        method: str,
        path: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        push: bool = False,
        scopes: tuple[str, ...] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """One request to one endpoint (with its query and headers); a streamed response with an expected status,
        or a typed error."""
        configured = at.headers
        request = self._http.build_request(
            method,
            at.url(ref.repository, path),
            headers={**configured, **(headers or {})},
            params={**at.params, **(params or {})} or None,
            content=content,
            extensions={
                _transport.SCOPES: scopes or _scopes(ref, push=push),
                _transport.ORIGIN_HEADERS: tuple(configured),
            },
        )
        response = _transport.send(self._http, request)
        if response.status_code in ok:
            return response
        try:
            refused = _transport.redirect_refused(response, request.url, what=what, registry=at.host)
            raise refused or _transport.error_for(response, what=what, registry=at.host, push=push)
        finally:
            response.close()

    def _send_to(
        self,
        ref: Reference,
        method: str,
        url: httpx.URL,
        what: str,
        *,
        headers: dict[str, str],
        content: Any = None,
    ) -> httpx.Response:
        request = self._http.build_request(
            method,
            url,
            headers=headers,
            content=content,
            extensions={_transport.SCOPES: _scopes(ref, push=True)},
        )
        return _transport.send(self._http, request)

    def _cancel(self, ref: Reference, url: httpx.URL) -> None:
        with suppress(ModelctlError):
            self._send_to(ref, "DELETE", url, "cancel upload", headers={}).close()

    def _pages(
        self,
        ref: Reference,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> Iterator[dict[str, Any]]:
        """JSON documents of a paginated listing; every page comes from the endpoint that served the first."""

        def first(at: Endpoint) -> tuple[dict[str, Any], httpx.URL | None, Endpoint]:
            response = self._open(at, ref, "GET", path, what=what, headers={"Accept": accept}, params=params)
            return (*_transport.json_page(response, MAX_LIST_PAGE, what=what), at)

        doc, next_url, at = self._walk(ref, first, retry=True, capability=RESOLVE)
        yield doc
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            if next_url is None or str(next_url) in seen:
                return
            seen.add(str(next_url))
            page_url = next_url

            def fetch(_: Endpoint, page_url: httpx.URL = page_url) -> tuple[dict[str, Any], httpx.URL | None]:
                configured = at.headers
                request = self._http.build_request(
                    "GET",
                    page_url,
                    headers={**configured, "Accept": accept},
                    extensions={
                        _transport.SCOPES: _scopes(ref, push=False),
                        _transport.ORIGIN_HEADERS: tuple(configured),
                    },
                )
                response = _transport.send(self._http, request)
                if response.status_code != 200:
                    try:
                        raise _transport.error_for(response, what=what, registry=at.host)
                    finally:
                        response.close()
                return _transport.json_page(response, MAX_LIST_PAGE, what=what)

            doc, next_url = self._walk(ref, fetch, retry=True, endpoints=[at])
            yield doc


# -- helpers -------------------------------------------------------------------------------------------------


def _scopes(ref: Reference, *, push: bool) -> tuple[str, ...]:
    return (f"repository:{ref.repository}:{'pull,push' if push else 'pull'}",)


def _manifest_capability(ref: Reference) -> str:
    """A manifest named by its tag needs a host that may resolve tags; one pinned by digest any that may pull."""
    return PULL if ref.digest else RESOLVE


def _display(base: str) -> str:
    """The registry name to show for an endpoint base URL or host."""
    host = httpx.URL(base).netloc.decode("ascii") if "://" in base else base
    return _transport.registry_for_host(host)


def _usefulness(error: ModelctlError) -> int:
    """How much an error tells the user: a definite answer beats a protocol error beats unreachable."""
    if isinstance(error, NotFound | AuthError):
        return 3
    if isinstance(error, RegistryError) and error.temporary:
        return 1 if error.status is not None else 0
    return 2


def _backoff(attempt: int, failures: Sequence[ModelctlError]) -> float:
    hinted = [e.retry_after for e in failures if isinstance(e, RegistryError) and e.retry_after is not None]
    if hinted:
        return min(BACKOFF_CAP, max(float(h) for h in hinted))
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt) * random.uniform(0.5, 1.0)


def _algorithm(header: str) -> str:
    """The algorithm a digest header names, well formed or not."""
    return header.partition(":")[0]


def _verify_manifest(ref: Reference, body: bytes, header: str | None) -> None:
    if ref.digest:
        actual = _digest.of_bytes(body, ref.digest.algorithm)
        if actual != ref.digest:
            raise DigestMismatch(ref.digest, actual, what=f"manifest of {ref}")
    echoed = _digest.parse(header)
    if echoed is not None:
        actual = _digest.of_bytes(body, echoed.algorithm)
        if actual != echoed:
            raise DigestMismatch(echoed, actual, what=f"manifest {ref} (Docker-Content-Digest)")


def _index_entries(doc: dict[str, Any]) -> list[Descriptor]:
    items = doc.get("manifests") or []
    if not isinstance(items, list):
        raise IntegrityError("malformed referrers index: manifests must be a list")
    return [Descriptor.from_json(item, where="referrer") for item in items]


def _finish(response: httpx.Response, ok: tuple[int, ...], what: str) -> None:
    try:
        if response.status_code not in ok:
            raise _transport.error_for(response, what=what, registry=_display(str(response.url)), push=True)
    finally:
        response.close()


def _source(chunks: BlobSource) -> Iterator[bytes]:
    if isinstance(chunks, bytes):
        yield chunks
        return
    if isinstance(chunks, str | os.PathLike):
        with Path(chunks).open("rb") as f:
            while piece := f.read(UPLOAD_READ_SIZE):
                yield piece
        return
    yield from chunks


def _regroup(pieces: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    """Re-cut a byte stream into groups of ``size`` bytes (the last may be shorter), each a list of pieces.

    Lists, not joined bytes: httpx sends each piece of a list as it is and can send the list again after an auth
    challenge, while one 64 MiB ``bytes`` made httpcore copy the unsent rest after every ``send()`` (quadratic:
    a 2 GiB push spent ~15 s of CPU there).
    """
    if size <= 0:
        raise ValueError("chunk_size must be positive")
    group: list[bytes] = []
    filled = 0
    for piece in pieces:
        while piece:
            take = min(len(piece), size - filled)
            group.append(piece[:take])
            piece = piece[take:]
            filled += take
            if filled == size:
                yield group
                group, filled = [], 0
    if group:
        yield group


def _check_upload(digest: Digest, size: int, hashing: _digest.Hashing, *, complete: bool = True) -> None:
    sent = hashing.size
    if not complete and sent < size:
        return
    if sent != size:
        raise IntegrityError(f"upload of {digest}: sent {sent} bytes, expected {size}")
    actual = hashing.digest()
    if actual != digest:
        raise DigestMismatch(digest, actual, what=f"uploaded blob {digest}")
