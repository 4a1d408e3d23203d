"""safejson.loads and transport.read_bounded: JSON and bodies from outside, refused in one line at their limits."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import httpx
import pytest

from modelctl.errors import IntegrityError
from modelctl.oci import safejson, transport


def loads(raw: bytes, **limits: int) -> object:
    return safejson.loads(raw, what="manifest", max_size=limits.pop("max_size", 1 << 20), **limits)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"[" * 64 + b"]" * 64, None),  # exactly the limit
        (b'{"s": "' + b"[" * 500 + b'"}', {"s": "[" * 500}),  # brackets in strings do not nest
        (b'{"s": "\\\\", "t": "' + b"{" * 100 + b'"}', {"s": "\\", "t": "{" * 100}),
        (b'{"s": "\\"[[["}', {"s": '"[[['}),
        (b"[" + b"1," * 1000 + b"1]", [1] * 1001),
        (b"1e400", float("inf")),
    ],
)
def test_what_parses(raw: bytes, value: object) -> None:
    parsed = loads(raw)
    if value is not None:
        assert parsed == value


@pytest.mark.parametrize(
    ("raw", "limits", "message"),
    [
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {}, "nests deeper than 64 levels"),
        (b"[" * 65 + b"]" * 65, {}, "nests deeper than 64 levels"),
        (b"[1," * 65 + b"]" * 65, {}, "nests deeper than 64 levels"),
        (b"[[]," * 40 + b"[[[[]]]]" + b"]" * 40, {"max_depth": 8}, "nests deeper than 8 levels"),
        (b"[" * 100_000, {}, "nests deeper than 64 levels"),
        (b"[]" * 70 + b"]", {}, "brackets do not balance"),
        (b"[" + b"{}," * 1000 + b"{}]", {"max_items": 500}, "holds more than 500 values"),
        (b"[" + b"0," * 600 + b"0]", {"max_items": 500}, "holds more than 500 values"),
        (b"[1]" + b" " * 100, {"max_size": 64}, "103 bytes, more than the 64 allowed"),
        ("[1]".encode("utf-16"), {}, "not UTF-8 text"),
        (b"1" * 5000, {}, "not JSON (Exceeds the limit (4300 digits) for integer string conversion)"),
        (b'{"a":', {}, "not JSON (Expecting value, line 1 column 6)"),
        (b"", {}, "not JSON"),
    ],
)
def test_what_is_refused(raw: bytes, limits: dict[str, int], message: str) -> None:
    with pytest.raises(IntegrityError, match="malformed manifest: ") as caught:
        loads(raw, **limits)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_too_deep_is_the_registry_servers_check() -> None:
    assert safejson.too_deep(b"[" * 65 + b"]" * 65)
    assert not safejson.too_deep(b"[]" * 100_000)
    assert safejson.too_deep(b"[" * 70)  # unbalanced counts as too deep: json.loads would refuse it anyway


def response(body: bytes, coding: str | None) -> httpx.Response:
    headers = {"Content-Encoding": coding} if coding else {}
    request = httpx.Request("GET", "https://reg.test/v2/ai/x/manifests/1")
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body), request=request)


@pytest.mark.parametrize(
    ("coding", "pack"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress), (None, bytes)],
)
def test_read_bounded_inflates_within_the_limit(coding: str | None, pack: Callable[[bytes], bytes]) -> None:
    body = b'{"schemaVersion":2}' * 100
    assert transport.read_bounded(response(pack(body), coding), 1 << 20, what="manifest") == body
    bomb = pack(bytes(64 << 20))
    assert coding is None or len(bomb) < 1 << 20
    with pytest.raises(IntegrityError, match="manifest is larger than the 4096 KiB limit"):
        transport.read_bounded(response(bomb, coding), 4 << 20, what="manifest")


@pytest.mark.parametrize(
    ("coding", "body", "message"), [("br", b"x", "unsupported content coding"), ("gzip", b"x", "not valid gzip")]
)
def test_read_bounded_refuses_what_it_cannot_inflate(coding: str, body: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        transport.read_bounded(response(body, coding), 1 << 20, what="manifest")
