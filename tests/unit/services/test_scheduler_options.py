"""serve's start-up values: sizes, MODELCTL_HOST's forms, the loopback rule, and the guard's key and Host checks."""

from __future__ import annotations

import base64

import pytest
from aiohttp.test_utils import make_mocked_request

from modelctl.errors import UsageError
from modelctl.services.serve.guard import _loopback_name, authorized
from modelctl.services.serve.options import ServeOptions, is_loopback, parse_host, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 << 20),
        ("8G", 8 << 30),
        ("2GB", 2 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("1000", 1000),
        ("64k", 64 << 10),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5 XB", "-1G", "1e9"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost", ("localhost", 8080)),
        ("http://10.0.0.5:11434/", ("10.0.0.5", 11434)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 8080)),
    ],
)
def test_host_forms(text: str, address: tuple[str, int]) -> None:
    assert parse_host(text) == address


@pytest.mark.parametrize("text", [":9000", "host:port", "host:70000"])
def test_bad_hosts(text: str) -> None:
    with pytest.raises(UsageError):
        parse_host(text)


def test_listening_beyond_loopback_needs_a_key() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    ServeOptions(host="127.0.0.1").check()
    ServeOptions(host="0.0.0.0", api_key="k").check()
    with pytest.raises(UsageError, match="--api-key"):
        ServeOptions(host="0.0.0.0").check()


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("app.localhost:1", True),
        ("attacker.example:8080", False),
        ("127.0.0.1.nip.io:8080", False),
        (None, False),
    ],
)
def test_loopback_host_headers(host: str | None, local: bool) -> None:
    assert _loopback_name(host) is local


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"Authorization": "Bearer k3y"}, True),
        ({"x-api-key": "k3y"}, True),
        ({"Authorization": "Basic " + base64.b64encode(b"user:k3y").decode()}, True),
        ({"Authorization": "Bearer k3"}, False),
        ({"Authorization": "Basic !!!"}, False),
        ({"Authorization": "k3y"}, False),
        ({}, False),
    ],
)
def test_the_key_in_each_header(headers: dict[str, str], ok: bool) -> None:
    assert authorized(make_mocked_request("GET", "/", headers=headers), "k3y") is ok
