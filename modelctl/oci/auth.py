"""The OCI challenge flow as an ``httpx.Auth``: send, read the 401's challenge, get a token, retry once.

``Bearer`` challenges are answered from the token service (``GET <realm>?service=&scope=``, HTTP Basic only
when credentials exist; an identity token is exchanged with an OAuth2 ``refresh_token`` POST); tokens are
cached per (host, realm, service, scope) until shortly before they expire: a token fetched with one host's
credentials is never sent to another host, even one that names the same token service (a mirror that passes the
registry's challenge through). ``Basic`` challenges are answered with the stored credentials. Once a host has
challenged, later requests to it carry the cached token up front, so parallel ranged reads do not each pay a 401
round trip. Credentials never reach a log or an error message.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass

import httpx

from modelctl.errors import AuthError, IntegrityError, RegistryError
from modelctl.oci import safejson, transport
from modelctl.oci.credentials import Credentials

DEFAULT_EXPIRES_IN = 60.0
_TOKEN_BODY_LIMIT = 1 << 20
_TOKEN_LIMIT = 64 << 10
"""Characters a token may have (JWTs are 1-4 KiB); it goes into every request's Authorization header."""
_MAX_LIFETIME = 366 * 86400.0
_CLIENT_ID = "modelctl"

CredentialLookup = Callable[[str], Credentials | None]
"""Maps a registry host (``host[:port]``) to its credentials."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme and its parameters (scheme and keys lowercased)."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``Bearer realm="...",service="...",scope="a:b:pull,push", Basic realm="x"`` (RFC 7235)."""
    out: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        start = i
        while i < n and header[i] not in " \t,=":
            i += 1
        token = header[start:i]
        if not token:
            i += 1
            continue
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and current is not None and not header.startswith("==", j):
            i = j + 1
            while i < n and header[i] in " \t":
                i += 1
            value, i = _read_value(header, i)
            current.params[token.lower()] = value
        elif j < n and header[j] == "=":
            # token68 (e.g. an opaque Negotiate blob) or a parameter before any scheme: skip it
            i = j + 1
            while i < n and header[i] not in ",":
                i += 1
        else:
            current = Challenge(token.lower(), {})
            out.append(current)
    return out


def _read_value(header: str, i: int) -> tuple[str, int]:
    n = len(header)
    if i < n and header[i] == '"':
        i += 1
        chars: list[str] = []
        while i < n and header[i] != '"':
            if header[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(header[i])
            i += 1
        return "".join(chars), i + 1
    start = i
    while i < n and header[i] not in " \t,":
        i += 1
    return header[start:i], i


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires: float


class RegistryAuth(httpx.Auth):
    """Bearer/Basic registry authentication for one ``httpx.Client``; safe to share between threads.

    ``credentials`` maps a request host to its credentials (looked up once per host). The scopes a request
    needs come from its ``modelctl.scopes`` extension (``repository:<name>:pull``), else from the challenge.
    """

    def __init__(self, credentials: CredentialLookup, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._creds: dict[str, Credentials | None] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str, tuple[str, ...]], _Token] = {}

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        host = request.url.netloc.decode("ascii")
        sent = self._authorize(request, host, self._challenges.get(host))
        response = yield request
        if response.status_code != 401:
            return
        challenge = _pick(parse_challenges(", ".join(response.headers.get_list("WWW-Authenticate"))))
        if challenge is None:
            return
        with self._lock:
            self._challenges[host] = challenge
        creds = self._credentials(host)
        if challenge.scheme == "basic":
            if creds is None or not creds.password or sent == "basic":
                return
            request.headers["Authorization"] = _basic(creds)
        else:
            scopes = self._scopes(request, challenge)
            key = (host, challenge.realm, challenge.params.get("service", ""), scopes)
            if sent == "bearer":
                with self._lock:
                    self._tokens.pop(key, None)
            token_request = self._token_request(request, host, challenge, scopes, creds)
            token_response = yield token_request
            token = self._read_token(token_response, host, creds)
            with self._lock:
                self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token.value}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise NotImplementedError("RegistryAuth works with httpx.Client only")
        yield request  # pragma: no cover

    def _authorize(self, request: httpx.Request, host: str, challenge: Challenge | None) -> str | None:
        """Attach what we already know works for ``host``; return the scheme sent (or None)."""
        if challenge is None or "Authorization" in request.headers:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials(host)
            if creds is None or not creds.password:
                return None
            request.headers["Authorization"] = _basic(creds)
            return "basic"
        key = (host, challenge.realm, challenge.params.get("service", ""), self._scopes(request, challenge))
        with self._lock:
            token = self._tokens.get(key)
        if token is None or token.expires <= self._clock():
            return None
        request.headers["Authorization"] = f"Bearer {token.value}"
        return "bearer"

    def _scopes(self, request: httpx.Request, challenge: Challenge) -> tuple[str, ...]:
        wanted = request.extensions.get(transport.SCOPES)
        if isinstance(wanted, Sequence) and not isinstance(wanted, str) and wanted:
            return tuple(str(s) for s in wanted)
        scope = challenge.params.get("scope", "")
        return tuple(scope.split(" ")) if scope else ()

    def _credentials(self, host: str) -> Credentials | None:
        with self._lock:
            if host in self._creds:
                return self._creds[host]
        found = self._lookup(transport.registry_for_host(host))
        with self._lock:
            self._creds[host] = found
        return found

    def _token_request(
        self,
        request: httpx.Request,
        host: str,
        challenge: Challenge,
        scopes: tuple[str, ...],
        creds: Credentials | None,
    ) -> httpx.Request:
        realm = httpx.URL(challenge.realm) if challenge.realm else None
        if realm is None or realm.scheme not in ("http", "https"):
            raise RegistryError(f"registry {host} sent an unusable token realm", temporary=False)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in scopes)
        headers = {
            "User-Agent": request.headers.get("User-Agent", transport.USER_AGENT),
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # as every registry request: read_bounded inflates nothing but gzip/deflate
        }
        extensions = {k: v for k, v in request.extensions.items() if k == "timeout"}
        if creds is not None and creds.identity_token:
            form: list[tuple[str, str | int | float | bool | None]] = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", _CLIENT_ID),
                *params,
            ]
            return httpx.Request(
                "POST",
                realm,
                content=str(httpx.QueryParams(form)).encode(),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                extensions=extensions,
            )
        if creds is not None and creds.password:
            headers["Authorization"] = _basic(creds)
            params.append(("account", creds.username))
        return httpx.Request("GET", realm.copy_merge_params(params), headers=headers, extensions=extensions)

    def _read_token(self, response: httpx.Response, host: str, creds: Credentials | None) -> _Token:
        registry = transport.registry_for_host(host)
        if response.status_code in (401, 403):
            response.close()
            if creds is None:
                hint = f"the repository may be private: run `modelctl login {registry}`"
            else:
                hint = f"the stored credentials were rejected: run `modelctl login {registry}` again"
            raise AuthError(f"token service of {registry} denied access (HTTP {response.status_code})", hint=hint)
        if response.status_code != 200:
            response.close()
            raise RegistryError(
                f"token service of {registry} failed (HTTP {response.status_code})",
                status=response.status_code,
                temporary=response.status_code in (408, 429) or response.status_code >= 500,
                retry_after=transport.retry_after(response.headers),
            )
        what = f"answer of the token service of {registry}"
        try:
            body = transport.read_bounded(response, _TOKEN_BODY_LIMIT, what=what)
        except IntegrityError as exc:
            raise _broken(registry, exc.message) from None
        finally:
            response.close()
        response._content = body  # httpx reads the response again once the flow moves on: give it these bytes
        value, lifetime = token_answer(body, registry)
        margin = min(10.0, lifetime / 4)
        return _Token(value, self._clock() + lifetime - margin)


def token_answer(body: bytes, registry: str) -> tuple[str, float]:
    """(token, lifetime in seconds) from a token service's JSON answer (``token`` or ``access_token``,
    ``expires_in``); RegistryError, one line, for anything else: not JSON, too large or deep, no token."""
    try:
        doc = safejson.loads(body, what=f"answer of the token service of {registry}", max_size=_TOKEN_BODY_LIMIT)
    except IntegrityError as exc:
        raise _broken(registry, exc.message) from None
    value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    header_safe = isinstance(value, str) and value.isascii() and value.isprintable()
    if not isinstance(value, str) or not header_safe or not 0 < len(value) <= _TOKEN_LIMIT:
        raise _broken(registry, f"token service of {registry} answered without a token")
    expires_in = doc.get("expires_in")
    usable = isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and 0 < expires_in < _MAX_LIFETIME
    return value, float(expires_in) if usable else DEFAULT_EXPIRES_IN


def _broken(registry: str, message: str) -> RegistryError:
    """A token service that answered 200 with something else than a token: asking again will not help."""
    return RegistryError(message, temporary=False, hint=f"the token service of {registry} is broken; tell its operator")


def _pick(challenges: list[Challenge]) -> Challenge | None:
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
