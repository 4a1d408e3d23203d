"""A token service for distribution's ``auth: token`` mode, as Docker Hub's auth.docker.io works.

``GET /token?service=...&scope=repository:NAME:pull,push[&scope=...]`` with HTTP Basic credentials (or
none, for anonymous pulls when allowed) answers ``{"token", "access_token", "expires_in", "issued_at"}``: an
RS256 JWT whose header carries the signing certificate in ``x5c`` (distribution 2.8 verifies the chain against
its ``rootcertbundle``) and whose ``access`` claim grants the requested actions. Every request is recorded, so
tests can assert that a client caches its tokens.

The one token service of the test suite: the ``token_server`` fixture (tests/integration/conftest.py) runs it
for ``servers.docker_registry``; tests with their own registry config use it directly as a context manager
(its ``realm``, ``service``, ``issuer`` and ``rootcertbundle`` fill distribution's ``auth: token``) and mint a
push token for a setup step with :meth:`TokenServer.token`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from helpers.servers import serving

SERVICE = "modelctl-test-registry"
ISSUER = "modelctl-test-token-issuer"
TOKEN_LIFETIME = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Signer:
    """An RSA key and its self-signed certificate (the registry's whole root bundle)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_path: Path

    @classmethod
    def generate(cls, directory: Path) -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelctl test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / "token-signer.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, cert_path)

    def jwt(self, claims: dict[str, Any]) -> str:
        header = {
            "alg": "RS256",
            "typ": "JWT",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class TokenRequest:
    account: str | None
    """The Basic-auth user, None when anonymous."""
    scopes: tuple[str, ...]
    status: int


class TokenServer:
    """The service itself; a context manager (``with TokenServer(...) as ts:``) on a free loopback port."""

    def __init__(
        self,
        signer: Signer,
        users: dict[str, str],
        *,
        anonymous_pull: bool = True,
        service: str = SERVICE,
        issuer: str = ISSUER,
    ) -> None:
        self.signer = signer
        self.users = dict(users)
        self.anonymous_pull = anonymous_pull
        self._service = service
        self._issuer = issuer
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- what the registry's config needs (servers.TokenAuthority) -------------------------------------------

    @property
    def realm(self) -> str:
        assert self._server is not None, "start the token server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def service(self) -> str:
        return self._service

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def rootcertbundle(self) -> Path:
        return self.signer.cert_path

    # -- counting --------------------------------------------------------------------------------------------

    def count(self, scope_contains: str = "", *, status: int | None = 200) -> int:
        """Token requests served so far (those with a scope containing ``scope_contains``; of ``status``)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (status is None or r.status == status) and any(scope_contains in s for s in r.scopes or ("",))
            )

    # -- issuing ---------------------------------------------------------------------------------------------

    def grant(self, account: str | None, scopes: tuple[str, ...]) -> list[dict[str, Any]]:
        """The access claim: users get what they ask; anonymous callers get ``pull`` only."""
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if account is not None else [a for a in wanted if a == "pull"]
            if kind and name and allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def token(self, account: str | None, scopes: tuple[str, ...]) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": account or "",
            "aud": self._service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": self.grant(account, scopes),
        }
        return self.signer.jwt(claims)

    def _answer(self, authorization: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        scopes = tuple(query.get("scope", []))
        account: str | None = None
        status = 200
        if authorization.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None  # type: ignore[assignment]
            if user in self.users and self.users[user] == password:
                account = user
            else:
                status = 401
        elif not self.anonymous_pull:
            status = 401
        if query.get("service", [self._service])[0] != self._service:
            status = 400
        with self._lock:
            self.requests.append(TokenRequest(account, scopes, status))
        if status != 200:
            return status, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        token = self.token(account, scopes)
        issued = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME, "issued_at": issued}

    # -- serving ---------------------------------------------------------------------------------------------

    def __enter__(self) -> TokenServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/token":
                    self._send(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                    return
                status, body = owner._answer(self.headers.get("Authorization", ""), parse_qs(url.query))
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="modelctl-test-token"')
                self.end_headers()
                self.wfile.write(data)

        self._server = self._stack.enter_context(serving(Handler))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
