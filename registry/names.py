"""The spec's grammar for repository names, tags and digests, and the parsing of raw `/v2/` request paths.

Everything that later becomes part of a filesystem path passes through here first. The raw path is parsed
(never the percent-decoded one): the grammar admits no `%`, so encoded traversal (`..%2f`) cannot hide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from modelctl import digest as _digest
from modelctl.digest import Digest

MAX_NAME_LENGTH: Final = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# The general digest grammar (algorithm:encoded); sha256 and sha512 are supported for storage.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")

Kind = Literal["ping", "catalog", "manifest", "blob", "upload", "uploads", "tags", "referrers"]


class GrammarError(ValueError):
    """A name, tag, digest or path that the grammar rejects; ``code`` is the OCI error code to answer with."""

    def __init__(self, code: Literal["NAME_INVALID", "DIGEST_INVALID", "UNSUPPORTED"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(_NAME.fullmatch(name))


def is_tag(tag: str) -> bool:
    return bool(_TAG.fullmatch(tag))


STORED_ALGORITHM: Final = _digest.SHA256
"""The default algorithm: what the registry names a manifest pushed by tag with."""
ALGORITHMS: Final = tuple(_digest.HEX_LENGTHS)
"""Every algorithm this registry stores (``blobs/<algorithm>/<hex>``), as the client's store does."""


def stored_digest(text: object) -> Digest | None:
    """The digest ``text`` is when this registry can store it (sha256 or sha512, lowercase hex); None otherwise."""
    return _digest.parse(text)


def stored_name(hex_name: str, algorithm: str = STORED_ALGORITHM) -> Digest | None:
    """The digest a file name under an ``<algorithm>/`` directory stands for; None for any other name."""
    return stored_digest(f"{algorithm}:{hex_name}")


def from_hex(hex_name: str) -> Digest | None:
    """The digest a bare hex file name stands for, its algorithm told by its length (64: sha256, 128: sha512)."""
    for algorithm, length in _digest.HEX_LENGTHS.items():
        if len(hex_name) == length:
            return stored_name(hex_name, algorithm)
    return None


def is_digest(digest: str) -> bool:
    """True for a digest this registry can store (sha256 or sha512, lowercase hex)."""
    return stored_digest(digest) is not None


def is_upload_id(upload_id: str) -> bool:
    return bool(_UPLOAD_ID.fullmatch(upload_id))


def check_name(name: str) -> str:
    if not is_name(name):
        raise GrammarError("NAME_INVALID", f"invalid repository name {name[:300]!r}")
    return name


def check_digest(digest: str) -> Digest:
    parsed = stored_digest(digest)
    if parsed is not None:
        return parsed
    if _ANY_DIGEST.fullmatch(digest) and digest.partition(":")[0] not in ALGORITHMS:
        raise GrammarError(
            "DIGEST_INVALID", f"unsupported digest algorithm in {digest[:200]!r}: only {' and '.join(ALGORITHMS)}"
        )
    raise GrammarError("DIGEST_INVALID", f"invalid digest {digest[:200]!r}")


def check_reference(reference: str) -> str:
    """A manifest reference: a tag, or a digest (anything with a colon is judged as a digest)."""
    if ":" in reference:
        return check_digest(reference)
    if not is_tag(reference):
        raise GrammarError("NAME_INVALID", f"invalid tag {reference[:200]!r}")
    return reference


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path addresses; ``ref`` is the tag/digest, blob digest or upload id, by kind."""

    kind: Kind
    name: str = ""
    ref: str = ""

    @property
    def digest(self) -> Digest:
        """``ref`` as a digest: free for a blob or referrers route, or a manifest addressed by digest (parsed)."""
        return Digest(self.ref)


_ROUTES: Final[tuple[tuple[Kind, re.Pattern[str]], ...]] = (
    ("uploads", re.compile(r"(?P<name>.+)/blobs/uploads/?")),
    ("upload", re.compile(r"(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)")),
    ("manifest", re.compile(r"(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("blob", re.compile(r"(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
    ("tags", re.compile(r"(?P<name>.+)/tags/list")),
    ("referrers", re.compile(r"(?P<name>.+)/referrers/(?P<ref>[^/]+)")),
)


def parse_path(raw_path: str) -> Route | None:
    """Parse the raw (still percent-encoded) path of a `/v2/` request; None when no endpoint matches.

    Raises GrammarError for a path that addresses an endpoint with an invalid name, reference or digest,
    and for any percent-encoding or backslash: no valid name, tag or digest contains one.
    """
    path = raw_path.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return Route("ping")
    if not path.startswith("/v2/"):
        return None
    if "%" in path or "\\" in path:
        raise GrammarError("NAME_INVALID", "percent-encoded characters and backslashes are not allowed in paths")
    rest = path[len("/v2/") :]
    if any(segment in ("", ".", "..") for segment in rest.rstrip("/").split("/")):
        raise GrammarError("NAME_INVALID", "empty, '.' and '..' path segments are not allowed")
    if rest == "_catalog":
        return Route("catalog")
    for kind, pattern in _ROUTES:
        m = pattern.fullmatch(rest)
        if m is None:
            continue
        name = check_name(m.group("name"))
        ref = m.groupdict().get("ref") or ""
        if kind == "manifest":
            ref = check_reference(ref)  # a Digest when it is one
        elif kind in ("blob", "referrers"):
            ref = check_digest(ref)
        return Route(kind, name, ref)
    return None
