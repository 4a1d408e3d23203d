"""HTTP plumbing for the registry client: endpoints, the shared ``httpx.Client``, redirects and error mapping.

One ``httpx.Client`` per :class:`~modelctl.oci.client.RegistryClient`, shared by all its threads. TLS is
verified; ``trust_env`` makes httpx honour ``HTTPS_PROXY``/``NO_PROXY`` and ``SSL_CERT_FILE``/``SSL_CERT_DIR``
(one SSL context is built up front and shared by the direct and proxy transports). Redirects are followed
here, not by httpx: ``Range`` survives every hop and ``Authorization`` (with a mirror's configured headers) is
dropped when the origin (scheme, host and port) changes: a 307 to a CDN carries a signed URL, never our token, and
another port of the same host may be another service. :class:`BlobReader` streams one blob response as raw bytes.
"""

from __future__ import annotations

import email.utils
import os
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Protocol

import httpcore
import httpx

from modelctl import __version__
from modelctl.config import Config
from modelctl.errors import AuthError, IntegrityError, ModelctlError, NotFound, RegistryError
from modelctl.oci import safejson

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
MAX_REDIRECTS = 5
USER_AGENT = f"modelctl/{__version__}"
SCOPES = "modelctl.scopes"
"""Request extension naming the token scopes a request needs (read by ``auth.RegistryAuth``)."""
ORIGIN_HEADERS = "modelctl.origin_headers"
"""Request extension naming headers that, like ``Authorization``, stay with the request's origin (a mirror's
configured headers): :func:`send` drops them on a redirect to another origin."""

READ_SIZE = 1 << 20
"""Bytes per socket read on HTTP/1.1 connections (httpcore's default is 64 KiB)."""
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
_ERROR_BODY_LIMIT = 64 << 10
_INFLATE_STEP = 64 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"})
_AUTH_CODES = frozenset({"UNAUTHORIZED", "DENIED"})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?')


def endpoint_for(config: Config, registry: str) -> str:
    """Base URL of ``registry``'s API: ``http://`` for insecure/loopback hosts; Docker Hub at registry-1."""
    host = DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry
    scheme = "http" if config.is_insecure(registry) else "https"
    return f"{scheme}://{host}"


def registry_for_host(netloc: str) -> str:
    """The registry name a request host belongs to (``registry-1.docker.io`` -> ``docker.io``)."""
    return DOCKER_HUB if netloc in (DOCKER_HUB_ENDPOINT, "index.docker.io") else netloc


def build_client(
    config: Config,
    *,
    auth: httpx.Auth | None = None,
    transport: httpx.BaseTransport | None = None,
    mounts: Mapping[str, httpx.BaseTransport] | None = None,
) -> httpx.Client:
    """The shared client: verified TLS, env proxies and CA bundle, a pool sized for parallel ranged reads.

    ``mounts`` are transports of their own for some origins (a mirror with its own CA file); ``transport``
    replaces the network for every origin (tests), those included."""
    _raise_read_size()
    timeout = httpx.Timeout(
        connect=config.connect_timeout, read=config.stall_timeout, write=config.stall_timeout, pool=120.0
    )
    return httpx.Client(
        auth=auth,
        transport=transport,
        mounts=None if transport is not None else mounts,
        verify=_trust_on_first_use(),
        trust_env=True,
        timeout=timeout,
        limits=_LIMITS,
        follow_redirects=False,
        # identity: a blob's bytes on the wire are the blob (iter_raw, Range offsets and digests agree).
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


class _LazyTrust(ssl.SSLContext):
    """httpx's default verifying context (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi's bundle) whose CA
    certificates load on the first TLS connection: parsing the bundle took 50 ms of every command's start-up, which
    a plain-HTTP loopback registry or a pull served from the store never needs (issue 16)."""

    _cafile: str | None
    _capath: str | None
    _loaded: bool
    _loading: threading.Lock

    def _trust(self) -> None:
        with self._loading:
            if not self._loaded:
                cafile, capath = self._cafile, self._capath
                if cafile is None and capath is None:  # neither variable set: certifi's bundle, found now (~1 ms)
                    import certifi

                    cafile = certifi.where()
                self.load_verify_locations(cafile=cafile, capath=capath)
                self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._trust()
        return super().wrap_bio(*args, **kwargs)


def _trust_on_first_use() -> ssl.SSLContext:
    """What ``httpx.create_ssl_context(verify=True, trust_env=True)`` builds, CA certificates loaded lazily."""
    context = _LazyTrust(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name, as httpx's does
    if os.environ.get("SSL_CERT_FILE"):
        context._cafile, context._capath = os.environ["SSL_CERT_FILE"], None
    elif os.environ.get("SSL_CERT_DIR"):
        context._cafile, context._capath = None, os.environ["SSL_CERT_DIR"]
    else:
        context._cafile, context._capath = None, None  # certifi's bundle (see _trust)
    context._loaded = False
    context._loading = threading.Lock()
    return context


def http_transport(*, verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """A direct transport with its own TLS verification and the shared client's pool limits."""
    return httpx.HTTPTransport(verify=verify, limits=_LIMITS, trust_env=False)


def _raise_read_size() -> None:
    """Read blob bodies 1 MiB per ``recv`` rather than 64 KiB: measured 1.3-1.9x the verified throughput of an
    ``iter_raw`` + sha256 loop on loopback. httpcore offers no per-pool knob, so this raises its class constant
    (never lowers it); a later httpcore without the constant is left alone."""
    connection = getattr(httpcore, "HTTP11Connection", None)
    current = getattr(connection, "READ_NUM_BYTES", None)
    if connection is not None and isinstance(current, int) and current < READ_SIZE:
        connection.READ_NUM_BYTES = READ_SIZE


def send(client: httpx.Client, request: httpx.Request, *, max_redirects: int = MAX_REDIRECTS) -> httpx.Response:
    """Send ``request`` (streamed), following redirects of GET/HEAD; the caller closes the response.

    Connection failures and timeouts become ``RegistryError(temporary=True)``.
    """
    auth: httpx.Auth | None = client.auth
    for _ in range(max_redirects + 1):
        try:
            response = client.send(request, stream=True, auth=auth)
        except httpx.TransportError as exc:
            raise unreachable(exc, _failed_host(exc, request)) from None
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or request.method not in ("GET", "HEAD") or not location:
            return response
        response.close()
        target = request.url.join(location)
        headers = httpx.Headers(request.headers)
        headers.pop("Host", None)
        if origin(target) != origin(request.url):
            for name in ("Authorization", *request.extensions.get(ORIGIN_HEADERS, ())):
                headers.pop(name, None)
            auth = None
        request = httpx.Request(request.method, target, headers=headers, extensions=dict(request.extensions))
    raise RegistryError(f"registry {request.url.host} redirected more than {max_redirects} times", temporary=False)


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default when the URL names none): what a credential is bound to."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _failed_host(exc: httpx.TransportError, request: httpx.Request) -> str:
    """The host that failed: the token service's when the auth flow's request failed, else the request's."""
    try:
        failed = exc.request
    except RuntimeError:
        failed = request
    return failed.url.netloc.decode("ascii")


def unreachable(exc: Exception, host: str) -> RegistryError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        detail = f"timed out ({type(exc).__name__})"
    tls = _tls_failure(exc) if isinstance(exc, httpx.ConnectError) else None  # the handshake, not a read
    if tls is not None:
        return _tls_error(tls, host, detail)
    return RegistryError(
        f"registry {host} unreachable: {detail}",
        temporary=True,
        hint="check the network, proxy settings (HTTPS_PROXY/NO_PROXY) and the registry's address",
    )


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a connection failure (httpx keeps it as the cause of its own), if there is one.

    End-of-stream errors are left out: a peer that hung up mid-handshake may do better on the next try."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            transient = isinstance(seen, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)
            return None if transient else seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_error(tls: ssl.SSLError, host: str, detail: str) -> RegistryError:
    """A failed handshake: no retry can fix it, so say what will. Verification is never the thing to turn off."""
    if isinstance(tls, ssl.SSLCertVerificationError):
        hint = (
            f"{host}'s certificate is not trusted (self-signed, a private CA, or issued for another name): "
            "point SSL_CERT_FILE at the CA certificate that signed it"
        )
    else:
        hint = (
            f"if {host} serves plain HTTP, add it to MODELCTL_INSECURE_REGISTRIES; otherwise check that this is "
            "its HTTPS port"
        )
    return RegistryError(f"TLS handshake with registry {host} failed: {detail}", temporary=False, hint=hint)


def redirect_refused(response: httpx.Response, first: httpx.URL, *, what: str, registry: str) -> RegistryError | None:
    """A 400/401/403 from the place a registry redirected to (object storage refusing a pre-signed URL, most often
    because it expired or the clocks disagree): temporary, because the next attempt asks the registry again and gets
    a freshly signed URL. None for any other answer."""
    if response.status_code not in (400, 401, 403) or origin(response.url) == origin(first):
        return None
    host = response.url.netloc.decode("ascii")
    return RegistryError(
        f"{host}, where {registry} redirected {what}, refused it (HTTP {response.status_code}; an expired "
        "pre-signed URL?)",
        status=response.status_code,
        temporary=True,
        hint=f"modelctl asks {registry} for a new URL on every retry; if this persists, the registry's storage "
        "settings (its clock, credentials or bucket policy) are wrong: tell its owner",
    )


def range_refused(response: httpx.Response, *, what: str, start: int) -> IntegrityError:
    """A 416 for bytes a manifest says the blob has: the registry holds fewer (``Content-Range: bytes */N``).

    An integrity failure, not a network one: asking again gets the same answer."""
    host = response.url.netloc.decode("ascii")
    found = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", "").strip())
    held = f"only {found[1]} bytes" if found else f"fewer than {start + 1} bytes"
    return IntegrityError(
        f"registry {host} has {held} of {what} and refused bytes {start}- (HTTP 416)",
        hint="the registry's copy is shorter than the manifest says, so it is damaged: ask its owner to push "
        "the model again",
    )


def read_bounded(response: httpx.Response, limit: int, *, what: str) -> bytes:
    """Read at most ``limit`` bytes of body (whatever Content-Length claims); more is an IntegrityError. A gzip or
    deflate body (sent although modelctl asks for identity) is inflated here in steps, so that a few KiB that
    inflate to GiB stop at ``limit`` too: httpx would inflate each 1 MiB read whole."""
    chunks: list[bytes] = []
    total = 0
    host = response.url.netloc.decode("ascii")
    # a response read already (httpx.MockTransport reads every one) holds its decoded bytes
    source = iter((response.content,)) if response.is_stream_consumed else _decoded(response, what)
    try:
        for chunk in source:
            total += len(chunk)
            if total > limit:
                raise IntegrityError(
                    f"{what} is larger than the {limit >> 10} KiB limit",
                    hint=f"{host} sent more than a registry sends for it; nothing was stored",
                )
            chunks.append(chunk)
    except httpx.TransportError as exc:
        raise unreachable(exc, host) from None
    return b"".join(chunks)


def _decoded(response: httpx.Response, what: str) -> Iterator[bytes]:
    """The body's bytes, inflated 64 KiB at a time when it is gzip or deflate coded."""
    coding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        yield from response.iter_raw()
        return
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise IntegrityError(f"{what} came in an unsupported content coding {coding[:40]!r}")
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | (32 if coding != "deflate" else 0))
    try:
        for chunk in response.iter_raw():
            while chunk:
                yield inflate.decompress(chunk, _INFLATE_STEP)
                chunk = inflate.unconsumed_tail
        yield inflate.flush()
    except zlib.error as exc:
        raise IntegrityError(f"{what} is not valid {coding} data ({exc})") from None
    if not inflate.eof:
        raise IntegrityError(f"{what} is not valid {coding} data (it ends before its stream does)")


def error_for(response: httpx.Response, *, what: str, registry: str, push: bool = False) -> ModelctlError:
    """The typed error for a failed response; reads (at most 64 KiB of) the error body."""
    status = response.status_code
    body = b""
    if response.request.method != "HEAD":
        try:
            body = read_bounded(response, _ERROR_BODY_LIMIT, what="error body")
        except (RegistryError, IntegrityError):
            body = b""
    codes, detail = parse_errors(body)
    code = codes[0] if codes else None
    suffix = f" ({detail})" if detail else f" (HTTP {status})"
    if status == 404 or (codes and codes[0] in _NOT_FOUND_CODES):
        return NotFound(
            f"{what} not found on {registry}{suffix}",
            hint="check the name, tag or digest; `modelctl ls` shows local models",
        )
    if status in (401, 403) or (codes and codes[0] in _AUTH_CODES):
        action = "push to" if push else "pull from"
        return AuthError(
            f"access to {what} denied by {registry}{suffix}",
            hint=f"check the name; if you may {action} it, run `modelctl login {registry}`",
        )
    temporary = status in (408, 429) or status >= 500
    return RegistryError(
        f"{registry} failed on {what}{suffix}",
        status=status,
        code=code,
        temporary=temporary,
        retry_after=retry_after(response.headers) if temporary else None,
    )


def parse_errors(body: bytes) -> tuple[list[str], str]:
    """OCI error body ``{"errors":[{"code","message"}]}`` -> (codes, "CODE: message; ...")."""
    try:
        doc = safejson.loads(body, what="error body", max_size=_ERROR_BODY_LIMIT) if body else None
    except IntegrityError:
        return [], ""
    items = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return [], ""
    codes: list[str] = []
    parts: list[str] = []
    for item in items[:5]:
        if not isinstance(item, dict):
            continue
        code, message = item.get("code"), item.get("message")
        if isinstance(code, str):
            codes.append(code)
        text = ": ".join(x for x in (code, message) if isinstance(x, str) and x)
        if text:
            parts.append(text[:200])
    return codes, "; ".join(parts)


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when: datetime | None = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class BlobReader:
    """One open blob response. ``offset`` is where the body starts in the blob (``start`` on a matching 206,
    else 0); ``total`` the blob size when known; ``length`` the body size when known."""

    __slots__ = ("_body", "_host", "_response", "length", "offset", "status", "total")

    def __init__(self, response: httpx.Response, *, start: int, end: int | None) -> None:
        self._response = response
        self._host = response.url.netloc.decode("ascii")
        self.status = response.status_code
        self.offset = 0
        self.total: int | None = None
        self.length: int | None = int_header(response, "Content-Length")
        if self.status == 206:
            text = response.headers.get("Content-Range", "")
            found = _CONTENT_RANGE.fullmatch(text.strip())
            first = int(found[1]) if found else -1
            last = int(found[2]) if found else -1
            if not found or first != start or last < first or (end is not None and last > end):
                asked = f"{start}-{'' if end is None else end}"
                raise RegistryError(
                    f"registry {self._host} answered a request for bytes {asked} with Content-Range {text!r}",
                    status=206,
                    temporary=True,
                )
            self.offset = start
            self.total = None if found[3] == "*" else int(found[3])
            self.length = last - first + 1
        else:
            self.total = self.length
        self._body: _Body | None = None

    def read_into(self, view: memoryview) -> int:
        """Read the next body bytes into ``view``, as ``recv_into`` does: some (at most ``len(view)``) as soon
        as there are any, 0 once the body is over.

        The bulk read of every pull: on a plain HTTP/1.1 connection it reads the socket straight into the
        caller's buffer (see :class:`_SocketBody`), which takes a 2 GiB pull on 2 cores from ~6.8 s to ~2.9 s.
        """
        try:
            if self._body is None:
                self._body = _socket_body(self._response) or _ChunkBody(self.iter_chunks(READ_SIZE))
            return self._body.read_into(view)
        except httpx.TransportError as exc:
            raise unreachable(exc, self._host) from None
        except OSError as exc:  # socket.timeout included: the stall timeout of the raw socket reads
            raise unreachable(exc, self._host) from None

    def iter_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body's raw bytes as they arrive (no copies; pieces longer than ``size`` are split)."""
        if self._response.is_stream_consumed:  # a body already in memory (httpx.MockTransport)
            content = self._response.content
            yield from (content[i : i + size] for i in range(0, len(content), size))
            return
        try:
            for chunk in self._response.iter_raw():
                if len(chunk) <= size:
                    yield chunk
                else:
                    for i in range(0, len(chunk), size):
                        yield chunk[i : i + size]
        except httpx.TransportError as exc:
            raise unreachable(exc, self._host) from None

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        self._response.close()  # a body we did not read to its end closes the connection, never reuses it

    def abort(self) -> None:
        """End a ``read_into`` blocked in another thread (Ctrl-C during a stalled download): shut the connection's
        socket down, so that the read returns at once and fails; the reader is closed as usual afterwards.

        ``socket.socket.shutdown`` on the file descriptor, also under TLS: ``SSLSocket.shutdown`` would drop the
        TLS object the blocked read is using."""
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with suppress(OSError):  # already closed
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Body(Protocol):
    def read_into(self, view: memoryview) -> int: ...
    def close(self) -> None: ...


class _ChunkBody:
    """Any response httpx can stream (mock transports, proxied TLS, chunked bodies): copy its chunks into the
    caller's buffers."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")

    def read_into(self, view: memoryview) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        take = min(len(self._left), len(view))
        view[:take] = self._left[:take]
        self._left = self._left[take:]
        return take

    def close(self) -> None:
        _close_iterator(self._chunks)


class _SocketBody:
    """A Content-Length body read from the connection's socket with ``recv_into``, past h11.

    Why: h11 copies every received block into its buffer and out again, and httpx adds a generator hop per
    block; for multi-GiB blobs that was 2-3 s of CPU per GiB on our 2-core CI machines, more than the sha256.
    httpcore hands out the connection through the documented ``network_stream`` extension. h11 may already
    hold body bytes read together with the headers: the first ``iter_raw`` chunk is exactly that buffer (h11
    returns all it holds, up to Content-Length), and everything after it is still in the socket. The
    connection is closed afterwards (h11 never saw the end of the message), so it is never reused half-read.
    """

    def __init__(self, response: httpx.Response, sock: socket.socket, length: int, read_timeout: float | None) -> None:
        self._raw = response.iter_raw()
        first = next(self._raw, b"")
        self._head = memoryview(first)
        self._left = length - len(first)
        self._sock = sock
        sock.settimeout(read_timeout)

    def read_into(self, view: memoryview) -> int:
        if self._head:
            take = min(len(self._head), len(view))
            view[:take] = self._head[:take]
            self._head = self._head[take:]
            return take
        if self._left <= 0 or not view:
            return 0
        got = self._sock.recv_into(view, min(len(view), self._left))
        if got == 0:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        self._left -= got
        return got

    def close(self) -> None:
        _close_iterator(self._raw)


def _close_iterator(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)  # a generator left mid-body
    if close is not None:
        close()


def _socket_body(response: httpx.Response) -> _SocketBody | None:
    """A :class:`_SocketBody` when the response allows one: HTTP/1.x, a Content-Length and no transfer or
    content coding, and a stream that is the socket itself (direct, or TLS on it; not TLS inside TLS to an
    HTTPS proxy, whose socket carries the proxy's encryption). Otherwise None, and httpx reads the body."""
    stream = response.extensions.get("network_stream")
    length = response.headers.get("Content-Length", "")
    if (
        stream is None
        or response.http_version not in ("HTTP/1.1", "HTTP/1.0")
        or not length.isdigit()
        or "Transfer-Encoding" in response.headers
        or response.headers.get("Content-Encoding", "identity").lower() != "identity"
    ):
        return None
    sock = stream.get_extra_info("socket")
    tls = stream.get_extra_info("ssl_object")
    if isinstance(sock, ssl.SSLSocket):
        if tls is None or tls is not getattr(sock, "_sslobj", None):
            return None
    elif type(sock) is not socket.socket or tls is not None:
        return None
    timeouts = response.request.extensions.get("timeout", {})
    read_timeout = timeouts.get("read") if isinstance(timeouts, dict) else None
    return _SocketBody(response, sock, int(length), read_timeout)


def media_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "")).split(";", 1)[0].strip().lower()


def int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def json_page(response: httpx.Response, limit: int, *, what: str) -> tuple[dict[str, Any], httpx.URL | None]:
    """A JSON object page of a listing (closed after reading) and the URL of the next page (``Link``)."""
    try:
        body = read_bounded(response, limit, what=what)
    finally:
        response.close()
    host = response.url.netloc.decode("ascii")
    hint = f"{host} does not answer as an OCI registry does"
    doc = safejson.loads(body, what=f"{what} from {host}", max_size=limit, hint=hint)
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed {what} from {host}: expected a JSON object", hint=hint)
    found = _LINK_NEXT.search(response.headers.get("Link", ""))
    return doc, response.url.join(found[1]) if found else None


def location(response: httpx.Response, what: str) -> httpx.URL:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"registry sent no upload location for {what}", temporary=False)
    return response.url.join(location)
