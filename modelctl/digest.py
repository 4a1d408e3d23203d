"""Content digests: the ``Digest`` value (``algorithm:hex``, sha256 or sha512), parsed once, and hashing while copying.

``Digest`` is a ``str`` subclass, as go-containerregistry's ``v1.Hash`` is a value with an algorithm and a hex part.
Its constructor is the one place a digest is validated, so a value typed ``Digest`` is known to be well formed
(lowercase hex of the algorithm's exact length: a hostile value never reaches a path). Being a ``str`` keeps the
rest simple: digests go into JSON documents, dict keys, sets, f-strings and URLs unchanged, compare equal to the
plain strings a manifest or a test holds, and pickle to the runtime worker. A frozen dataclass would need a
conversion at every one of those places. Parsing happens at the edges (a manifest or descriptor's JSON, a
reference's ``@sha256:...``, a registry URL path, an archive member's name, a file name in the store);
``Digest(d)`` of a value that already is a ``Digest`` returns it without checking it again.

The local store keeps blobs of both algorithms (``blobs/sha256/<hex>``, ``blobs/sha512/<hex>``); what modelctl
hashes itself (``package``, a manifest pulled by tag) is named by sha256, the default everywhere here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Protocol

from modelctl.errors import IntegrityError, shown

if TYPE_CHECKING:
    from hashlib import _Hash as Hasher

SHA256 = "sha256"
SHA512 = "sha512"
HEX_LENGTHS = {SHA256: 64, SHA512: 128}
"""The supported algorithms and the number of lowercase hex digits of each."""
HEX_DIGITS = "0123456789abcdef"
COPY_CHUNK = 1 << 20

_PATTERN = re.compile("|".join(f"{name}:[0-9a-f]{{{length}}}" for name, length in HEX_LENGTHS.items()))
_HEX_PREFIX = re.compile(r"[0-9a-f]+")


class Digest(str):
    """A well-formed ``algorithm:hex`` digest. ``Digest(text)`` validates; IntegrityError names what was wrong."""

    __slots__ = ()

    def __new__(cls, text: object) -> Digest:
        if type(text) is cls:
            return text
        if not isinstance(text, str) or not _PATTERN.fullmatch(text):
            raise IntegrityError(
                f"malformed digest {shown(text)}",
                hint="expected sha256: and 64 lowercase hex digits (or sha512: and 128)",
            )
        return super().__new__(cls, text)

    @classmethod
    def of(cls, algorithm: str, hex_digits: str) -> Digest:
        """The digest with this algorithm and hex part (e.g. a file name in ``blobs/sha256/``), validated."""
        return cls(f"{algorithm}:{hex_digits}")

    @classmethod
    def sha256(cls, hex_digits: str) -> Digest:
        return cls.of(SHA256, hex_digits)

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    def hasher(self) -> Hasher:
        """A fresh hash object of this digest's algorithm."""
        return new_hasher(self.algorithm)


def parse(text: object) -> Digest | None:
    """``Digest(text)``, or None where ``text`` is not a well-formed digest."""
    try:
        return Digest(text)
    except IntegrityError:
        return None


def is_hex_prefix(text: str, algorithm: str = SHA256) -> bool:
    """True for 1 to all of the lowercase hex digits of an ``algorithm`` digest (a model ID, a digest's start)."""
    return 0 < len(text) <= HEX_LENGTHS[algorithm] and bool(_HEX_PREFIX.fullmatch(text))


def new_hasher(algorithm: str = SHA256) -> Hasher:
    if algorithm not in HEX_LENGTHS:
        raise IntegrityError(f"unsupported digest algorithm {shown(algorithm)}", hint="modelctl reads sha256, sha512")
    return hashlib.new(algorithm)


def of_hasher(hasher: Hasher) -> Digest:
    """The digest a hash object has computed so far."""
    return Digest.of(hasher.name, hasher.hexdigest())


def of_bytes(data: bytes, algorithm: str = SHA256) -> Digest:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return of_hasher(hasher)


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Hashing:
    """A running digest and byte count of the bytes that pass through it: the one hash-while-copying helper.

    ``copy`` moves a file's bytes to another (or nowhere, just hashing them); ``through`` hashes an iterable of
    chunks as a consumer pulls them; ``reader`` wraps a file so whatever reads it (tarfile) hashes what it reads.
    """

    def __init__(self, algorithm: str = SHA256) -> None:
        self._hasher = new_hasher(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return of_hasher(self._hasher)

    def copy(self, src: IO[bytes], dst: _Writable | None = None, *, chunk: int = COPY_CHUNK) -> None:
        while block := src.read(chunk):
            self.update(block)
            if dst is not None:
                dst.write(block)

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for block in chunks:
            self.update(block)
            yield block

    def reader(self, f: IO[bytes]) -> _HashingReader:
        return _HashingReader(f, self)


class _HashingReader:
    """A read-only file wrapper passing what is read through a ``Hashing``."""

    def __init__(self, f: IO[bytes], hashing: Hashing) -> None:
        self._f = f
        self._hashing = hashing

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._hashing.update(data)
        return data


def copy_hashed(
    src: IO[bytes], dst: _Writable | None = None, *, algorithm: str = SHA256, chunk: int = COPY_CHUNK
) -> tuple[Digest, int]:
    """Copy ``src`` to ``dst`` (or only read it, when ``dst`` is None) while hashing; the digest and byte count."""
    hashing = Hashing(algorithm)
    hashing.copy(src, dst, chunk=chunk)
    return hashing.digest(), hashing.size


def of_file(f: IO[bytes], chunk: int = COPY_CHUNK, algorithm: str = SHA256) -> Digest:
    return copy_hashed(f, None, algorithm=algorithm, chunk=chunk)[0]
