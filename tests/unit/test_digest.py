"""Digest: parsed once (sha256 and sha512), hostile text refused; the one hash-while-copying helper."""

from __future__ import annotations

import hashlib
import io
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl import digest
from modelctl.digest import Digest, copy_hashed
from modelctl.errors import IntegrityError

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


@pytest.mark.parametrize(("text", "algorithm", "hex_length"), [(SHA256, "sha256", 64), (SHA512, "sha512", 128)])
def test_valid_digests_parse(text: str, algorithm: str, hex_length: int) -> None:
    d = Digest(text)
    assert d == text and str(d) == text and isinstance(d, str)
    assert d.algorithm == algorithm
    assert d.hex == text.split(":", 1)[1] and len(d.hex) == hex_length
    assert d.hasher().name == algorithm
    assert Digest.of(algorithm, d.hex) == d


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:",
        "sha256:" + "A" * 64,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "a" * 128,
        "sha512:" + "a" * 64,
        "sha512:" + "a" * 127,
        "sha384:" + "a" * 96,
        "md5:" + "a" * 32,
        "a" * 64,
        "sha256:../../../../etc/passwd",
        "sha256:" + "a" * 64 + "/../x",
        "../sha256:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
        " sha256:" + "a" * 64,
        "sha256:" + "g" * 64,
        "sha256-" + "a" * 64,
    ],
)
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(IntegrityError, match="malformed digest"):
        Digest(bad)
    assert digest.parse(bad) is None


@pytest.mark.parametrize("bad", [None, 7, b"sha256:" + b"a" * 64, ["sha256:" + "a" * 64]])
def test_non_strings_are_refused(bad: object) -> None:
    with pytest.raises(IntegrityError):
        Digest(bad)
    assert digest.parse(bad) is None


def test_parsing_a_digest_again_is_the_same_value() -> None:
    d = Digest(SHA256)
    assert Digest(d) is d


def test_bare_hex_from_the_hub() -> None:
    assert Digest.sha256("ab" * 32) == "sha256:" + "ab" * 32
    with pytest.raises(IntegrityError):
        Digest.sha256("AB" * 32)  # callers lowercase what the Hub says first


def test_json_dict_and_pickle_round_trip() -> None:
    d, e = Digest(SHA256), Digest(SHA512)
    doc = json.loads(json.dumps({"digest": d, "digests": [e], d: 1}))
    assert doc == {"digest": SHA256, "digests": [SHA512], SHA256: 1}
    assert Digest(doc["digest"]) == d and Digest(doc["digests"][0]) == e
    assert {d: 1}[SHA256] == 1 and SHA256 in {d}  # equal to the plain string, same hash
    back = pickle.loads(pickle.dumps(d))
    assert back == d and type(back) is Digest


def test_hex_prefix() -> None:
    assert digest.is_hex_prefix("3f8eb4")
    assert digest.is_hex_prefix("a" * 64) and not digest.is_hex_prefix("a" * 65)
    assert digest.is_hex_prefix("a" * 128, digest.SHA512)
    assert not digest.is_hex_prefix("")
    assert not digest.is_hex_prefix("3F8E")
    assert not digest.is_hex_prefix("../x")


def test_of_bytes_matches_hashlib() -> None:
    assert digest.of_bytes(b"hello") == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert digest.of_bytes(b"hello", "sha512") == "sha512:" + hashlib.sha512(b"hello").hexdigest()
    with pytest.raises(IntegrityError):
        digest.of_bytes(b"hello", "md5")


class _Chunked(io.RawIOBase):
    """A source that returns at most the next planned number of bytes per read (as a pipe or socket may)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._sizes = sizes
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self._sizes.pop(0) if self._sizes else len(self._data)
        if n is not None and n >= 0:
            want = min(want, n)
        out = self._data[self._pos : self._pos + max(want, 1)]
        self._pos += len(out)
        return out


@given(
    data=st.binary(max_size=4096),
    sizes=st.lists(st.integers(min_value=1, max_value=700), max_size=20),
    chunk=st.integers(min_value=1, max_value=5000),
    algorithm=st.sampled_from(["sha256", "sha512"]),
    to_file=st.booleans(),
)
def test_copy_hashed_is_hashlib_for_any_bytes_and_chunking(
    data: bytes, sizes: list[int], chunk: int, algorithm: str, to_file: bool
) -> None:
    out = io.BytesIO() if to_file else None
    got, count = copy_hashed(_Chunked(data, sizes), out, algorithm=algorithm, chunk=chunk)
    assert got == f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    assert count == len(data)
    if out is not None:
        assert out.getvalue() == data


@given(pieces=st.lists(st.binary(max_size=300), max_size=20))
def test_hashing_through_and_reader_agree_with_hashlib(pieces: list[bytes]) -> None:
    whole = b"".join(pieces)
    expected = digest.of_bytes(whole)
    through = digest.Hashing()
    assert b"".join(through.through(pieces)) == whole
    assert (through.digest(), through.size) == (expected, len(whole))
    reading = digest.Hashing()
    reader = reading.reader(io.BytesIO(whole))
    while reader.read(7):
        pass
    assert (reading.digest(), reading.size) == (expected, len(whole))
