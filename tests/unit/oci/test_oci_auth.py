"""RegistryAuth: the 401 -> token -> retry dance, token caching, Basic auth, and what errors may say."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl.errors import AuthError, RegistryError
from modelctl.oci import transport
from modelctl.oci.auth import RegistryAuth, parse_challenges
from modelctl.oci.credentials import Credentials

SECRET = "s3cr3t-P@ss"
BEARER = 'Bearer realm="https://auth.test/token",service="reg.test"'
PULL = ("repository:ai/x:pull",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenRegistry:
    """A registry at reg.test whose token service at auth.test hands out numbered tokens."""

    def __init__(self, *, token_status: int = 200, token_body: dict[str, object] | None = None) -> None:
        self.token_status = token_status
        self.token_body = token_body
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []
        self.valid: set[str] = set()
        self.challenge = BEARER

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests.append(request)
            token = f"tok{len(self.token_requests)}"
            self.valid.add(token)
            body = self.token_body if self.token_body is not None else {"token": token}
            return httpx.Response(self.token_status, json=body)
        self.registry_requests.append(request)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in self.valid:
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(401, headers={"WWW-Authenticate": self.challenge})


def client_for(
    handler: Callable[[httpx.Request], httpx.Response],
    creds: Credentials | None = None,
    clock: Callable[[], float] | None = None,
    seen_hosts: list[str] | None = None,
) -> httpx.Client:
    def lookup(host: str) -> Credentials | None:
        if seen_hosts is not None:
            seen_hosts.append(host)
        return creds

    auth = RegistryAuth(lookup, clock=clock) if clock else RegistryAuth(lookup)
    return httpx.Client(auth=auth, transport=httpx.MockTransport(handler))


URL = "https://reg.test/v2/ai/x/manifests/latest"


def get(client: httpx.Client, url: str = URL, scopes: tuple[str, ...] = PULL) -> httpx.Response:
    return client.get(url, extensions={transport.SCOPES: scopes})


# -- challenge parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (BEARER, [("bearer", {"realm": "https://auth.test/token", "service": "reg.test"})]),
        (
            'Bearer realm="https://a/t",service="s",scope="repository:ai/x:pull,push"',
            [("bearer", {"realm": "https://a/t", "service": "s", "scope": "repository:ai/x:pull,push"})],
        ),
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        ("basic realm=plain", [("basic", {"realm": "plain"})]),
        (
            'Basic realm="x", Bearer realm="https://a/t", service="s"',
            [("basic", {"realm": "x"}), ("bearer", {"realm": "https://a/t", "service": "s"})],
        ),
        ('Bearer realm="quote \\" inside"', [("bearer", {"realm": 'quote " inside'})]),
        ("Negotiate abc==, Basic realm=r", [("negotiate", {}), ("basic", {"realm": "r"})]),
        ("", []),
        (
            'BEARER REALM="r",Error="insufficient_scope"',
            [("bearer", {"realm": "r", "error": "insufficient_scope"})],
        ),
    ],
)
def test_parse_challenges(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    assert [(c.scheme, c.params) for c in parse_challenges(header)] == expected


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=10)


@given(st.dictionaries(_token, st.text(max_size=30), max_size=5))
def test_parse_challenges_round_trip(params: dict[str, str]) -> None:
    escaped = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in params.items()}
    quoted = ",".join(f'{k}="{v}"' for k, v in escaped.items())
    [challenge] = parse_challenges(f"Bearer {quoted}")
    assert challenge.scheme == "bearer"
    assert challenge.params == params


@given(st.text(max_size=80))
def test_parse_challenges_never_crashes(header: str) -> None:
    parse_challenges(header)


# -- bearer ------------------------------------------------------------------------------------------------


def test_bearer_anonymous() -> None:
    fake = TokenRegistry()
    with client_for(fake) as client:
        response = get(client)
    assert response.status_code == 200
    [token_request] = fake.token_requests
    assert "Authorization" not in token_request.headers
    assert token_request.url.params.get("service") == "reg.test"
    assert token_request.url.params.get_list("scope") == ["repository:ai/x:pull"]
    assert fake.registry_requests[-1].headers["Authorization"] == "Bearer tok1"


def test_bearer_with_credentials_sends_basic_to_token_service() -> None:
    fake = TokenRegistry()
    with client_for(fake, Credentials("alice", SECRET)) as client:
        assert get(client).status_code == 200
    [token_request] = fake.token_requests
    expected = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert token_request.headers["Authorization"] == f"Basic {expected}"
    assert token_request.url.params.get("account") == "alice"


def test_scope_from_challenge_when_request_names_none() -> None:
    fake = TokenRegistry()
    fake.challenge = BEARER + ',scope="repository:other/y:pull"'
    with client_for(fake) as client:
        assert client.get("https://reg.test/v2/other/y/tags/list").status_code == 200
    assert fake.token_requests[0].url.params.get_list("scope") == ["repository:other/y:pull"]


def test_push_scope_is_requested() -> None:
    fake = TokenRegistry()
    with client_for(fake) as client:
        get(client, scopes=("repository:ai/x:pull,push", "repository:ai/src:pull"))
    assert fake.token_requests[0].url.params.get_list("scope") == [
        "repository:ai/x:pull,push",
        "repository:ai/src:pull",
    ]


def test_access_token_field_and_timeout_extension_kept() -> None:
    fake = TokenRegistry(token_body={"access_token": "tok1"})
    with client_for(fake) as client:
        assert get(client).status_code == 200
    assert "timeout" in fake.token_requests[0].extensions


def test_token_cache_one_token_request_and_no_more_401s() -> None:
    fake = TokenRegistry()
    with client_for(fake) as client:
        for _ in range(10):
            assert get(client).status_code == 200
    assert len(fake.token_requests) == 1
    assert len(fake.registry_requests) == 11  # one 401, then every request authorised up front


def test_token_cache_is_per_scope() -> None:
    fake = TokenRegistry()
    with client_for(fake) as client:
        get(client)
        get(client, scopes=("repository:ai/y:pull",))
        get(client)
    assert len(fake.token_requests) == 2


def test_token_expiry_default_60s() -> None:
    fake, clock = TokenRegistry(), Clock()
    with client_for(fake, clock=clock) as client:
        get(client)
        clock.now += 30
        get(client)
        assert len(fake.token_requests) == 1
        clock.now += 31
        get(client)
    assert len(fake.token_requests) == 2


def test_token_expires_in_honoured() -> None:
    fake, clock = TokenRegistry(token_body={"token": "tok1", "expires_in": 300}), Clock()
    with client_for(fake, clock=clock) as client:
        get(client)
        clock.now += 250
        get(client)
    assert len(fake.token_requests) == 1


def test_rejected_cached_token_is_refreshed_once() -> None:
    fake = TokenRegistry()
    with client_for(fake) as client:
        get(client)
        fake.valid.clear()  # the registry revokes it
        assert get(client).status_code == 200
    assert len(fake.token_requests) == 2


def test_still_401_after_token_returns_401_without_looping() -> None:
    fake = TokenRegistry()
    fake.valid = set()

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        fake.valid.clear()
        return response

    with client_for(handler) as client:
        assert get(client).status_code == 401
    assert len(fake.registry_requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_token_service_denial_is_auth_error_without_secret(status: int) -> None:
    fake = TokenRegistry(token_status=status, token_body={"details": "bad"})
    with client_for(fake, Credentials("alice", SECRET)) as client, pytest.raises(AuthError) as caught:
        get(client)
    text = str(caught.value) + repr(caught.value) + str(caught.value.hint)
    assert "modelctl login reg.test" in text
    assert SECRET not in text
    assert caught.value.exit_code == 4


def test_token_service_denial_anonymous_hints_login() -> None:
    fake = TokenRegistry(token_status=401)
    with client_for(fake) as client, pytest.raises(AuthError, match="denied") as caught:
        get(client)
    assert "private" in str(caught.value)


def test_token_service_5xx_is_temporary() -> None:
    fake = TokenRegistry(token_status=503)
    with client_for(fake) as client, pytest.raises(RegistryError) as caught:
        get(client)
    assert caught.value.temporary


def test_token_service_without_token() -> None:
    fake = TokenRegistry(token_body={"nothing": 1})
    with client_for(fake) as client, pytest.raises(RegistryError, match="without a token"):
        get(client)


def test_bad_realm_is_rejected() -> None:
    fake = TokenRegistry()
    fake.challenge = 'Bearer realm="file:///etc/passwd"'
    with client_for(fake) as client, pytest.raises(RegistryError, match="realm"):
        get(client)
    assert fake.token_requests == []


def test_identity_token_uses_oauth2_refresh() -> None:
    fake = TokenRegistry(token_body={"access_token": "tok1", "expires_in": 120})
    with client_for(fake, Credentials("", "", "refresh-xyz")) as client:
        assert get(client).status_code == 200
    [token_request] = fake.token_requests
    assert token_request.method == "POST"
    form = httpx.QueryParams(token_request.content.decode())
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "refresh-xyz"
    assert form["service"] == "reg.test"
    assert form.get_list("scope") == ["repository:ai/x:pull"]


def test_credentials_looked_up_by_registry_name_once() -> None:
    fake = TokenRegistry()
    hosts: list[str] = []
    with client_for(fake, seen_hosts=hosts) as client:
        for _ in range(3):
            get(client, url="https://registry-1.docker.io/v2/ai/x/manifests/latest")
    assert hosts == ["docker.io"]


def test_no_challenge_header_returns_401() -> None:
    with client_for(lambda r: httpx.Response(401)) as client:
        assert get(client).status_code == 401


# -- basic -------------------------------------------------------------------------------------------------


def basic_registry(requests: list[str | None]) -> Callable[[httpx.Request], httpx.Response]:
    """Records the Authorization header of every request (the request object itself is reused by retries)."""
    good = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") == good:
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})

    return handler


def test_basic_auth_retry_then_preemptive() -> None:
    requests: list[str | None] = []
    with client_for(basic_registry(requests), Credentials("alice", SECRET)) as client:
        assert get(client).status_code == 200
        assert get(client).status_code == 200
    assert [r is not None for r in requests] == [False, True, True]


def test_basic_auth_without_credentials_returns_401() -> None:
    requests: list[str | None] = []
    with client_for(basic_registry(requests)) as client:
        assert get(client).status_code == 401
    assert len(requests) == 1


def test_basic_auth_wrong_password_does_not_loop() -> None:
    requests: list[str | None] = []
    with client_for(basic_registry(requests), Credentials("alice", "wrong")) as client:
        assert get(client).status_code == 401
        assert get(client).status_code == 401
    assert len(requests) == 3  # 401, retry 401; then sent up front once: 401


def test_credentials_repr_hides_secret() -> None:
    creds = Credentials("alice", SECRET)
    assert SECRET not in repr(creds)
    assert SECRET not in str(creds)
    assert "alice" in repr(creds)
    assert "refresh-xyz" not in repr(Credentials("", "", "refresh-xyz"))
