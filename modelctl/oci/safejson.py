"""JSON from outside (a registry, a token service, an archive): size, depth and item limits before ``json.loads``.

``json.loads`` recurses once per nested array or object, so ``{"a":`` repeated 50,000 times ends in a
RecursionError, and a few MiB of ``[{},{},...]`` build a hundred MiB of objects. Every document modelctl reads
from outside is a few KiB with a handful of levels, so :func:`loads` refuses, with one typed line, anything
larger than its caller's limit, nested deeper than :data:`MAX_DEPTH`, holding more than :data:`MAX_ITEMS`
values, not UTF-8 or not JSON. The registry server (``registry.manifests``) checks pushed manifests with the same
:func:`too_deep`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from modelctl.errors import IntegrityError

MAX_DEPTH: Final = 64
"""Manifests nest 4 or 5 levels; a deeper body is refused before ``json.loads`` could recurse on it."""
MAX_ITEMS: Final = 1 << 18
"""Values (array elements and object members) one document may hold: 262,144, about 30 MiB of Python objects."""

_STRING: Final = re.compile(rb'"[^"]*"')
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(set(range(256)) - set(b"[]{}"))
_NOT_STRUCTURE: Final = bytes(set(range(256)) - set(b"[]{},"))


def _structure(raw: bytes) -> bytes:
    """``raw``'s brackets and commas outside strings. Escapes go first (after ``\\\\`` and ``\\"`` are gone a
    string is ``"[^"]*"``), then the strings; left to right, as a JSON parser pairs them in UTF-8 text."""
    return _STRING.sub(b"", raw.replace(b"\\\\", b"").replace(b'\\"', b"")).translate(None, _NOT_STRUCTURE)


def _nesting(structure: bytes, limit: int) -> str | None:
    """None when the brackets of ``structure`` balance within ``limit`` levels, else what is wrong. Each pass
    removes the innermost ``[]`` pairs (objects count as arrays), so linear work per level, all in C."""
    brackets = structure.translate(_BRACKETS, _NOT_BRACKETS)
    if b"[" * (limit + 1) in brackets:  # the common hostile shape, found in one scan
        return f"it nests deeper than {limit} levels"
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if not shorter:
            return None
        if len(shorter) == len(brackets):
            return "not JSON: its brackets do not balance"
        brackets = shorter
    return f"it nests deeper than {limit} levels"


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw``'s arrays and objects nest deeper than ``limit`` (or its brackets do not balance)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return _nesting(_structure(raw), limit) is not None


def loads(
    raw: bytes,
    *,
    what: str,
    max_size: int,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    hint: str | None = None,
) -> Any:
    """``json.loads`` of an untrusted UTF-8 body. IntegrityError ``malformed WHAT: why`` (with ``hint``) when it is
    larger than ``max_size`` bytes, nests deeper than ``max_depth``, holds more than ``max_items`` values, or is not
    UTF-8 JSON; never a RecursionError, and memory stays proportional to the limits."""

    def refuse(why: str) -> IntegrityError:
        return IntegrityError(f"malformed {what}: {why}", hint=hint)

    if len(raw) > max_size:
        raise refuse(f"{len(raw)} bytes, more than the {max_size} allowed")
    try:
        text = raw.decode("utf-8")  # UTF-16/32 would hide brackets from the scan below; OCI documents are UTF-8
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    containers = raw.count(b"[") + raw.count(b"{")
    if containers > max_depth or containers + raw.count(b",") > max_items:
        structure = _structure(raw)
        if len(structure) - structure.count(b"]") - structure.count(b"}") > max_items:  # values <= commas + containers
            raise refuse(f"it holds more than {max_items} values")
        problem = _nesting(structure, max_depth)  # after the count: at most 2 * max_items brackets to pair
        if problem is not None:
            raise refuse(problem)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise refuse(f"not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4,300 digits; recursion: never, by the scan
        raise refuse(f"not JSON ({str(exc).split(':')[0].split(';')[0]})") from None
