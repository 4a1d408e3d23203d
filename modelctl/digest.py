"""Content digests (``sha256:<hex>``): validation and computation, shared by the store, client and registry."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from modelctl.errors import IntegrityError

_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


def is_valid(digest: str) -> bool:
    return bool(_SHA256.fullmatch(digest))


def check(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256 digest; a hostile value never reaches a path."""
    if not is_valid(digest):
        raise IntegrityError(
            f"malformed digest {digest!r}", hint="expected sha256: and 64 lowercase hex digits"
        )
    return digest


def hex_of(digest: str) -> str:
    return check(digest).split(":", 1)[1]


def of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def of_file(f: BinaryIO, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return "sha256:" + h.hexdigest()
