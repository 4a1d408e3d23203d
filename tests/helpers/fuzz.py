"""Hostile-input property tests: one settings object, one memory meter, and mutations of valid documents.

Every parser of outside input (manifests, configs, registry answers, token answers, archives, GGUF headers, card
front matter) has a property test in ``tests/unit/test_parse_fuzz.py`` (GGUF: ``test_gguf_fuzz.py``) that runs
:data:`EXAMPLES` derandomized cases: a run is the same every time, so a failure reproduces. :class:`Peak` traces the
heap of each parser call and fails the test when a call's peak reached :data:`MEMORY_LIMIT`.

A mutation is three integers (``(kind, a, b)``): integers are what hypothesis draws cheapest (about 1 ms per case
on the 2-vCPU test machine, against 3-5 ms for nested JSON strategies), and ``a`` and ``b`` pick a path of the
document, a value from :data:`VALUES`, a hostile raw value from :data:`HOSTILE_RAW`, or a byte position.

``MODELCTL_FUZZ_EXAMPLES`` raises the count for a longer run (the cases stay derandomized).
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")
EXAMPLES = int(os.environ.get("MODELCTL_FUZZ_EXAMPLES", "2000"))
MEMORY_LIMIT = 100 << 20
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

DEEP = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
"""The issue's case: 50,000 nested objects (json.loads raises RecursionError on it)."""
HOSTILE_RAW = (
    DEEP,
    b"[" * 65 + b"]" * 65,
    b"[" * 64 + b"]" * 64,
    b"[1," * 20_000 + b"]" * 20_000,
    b"[" * 100_000,
    b"1" * 5000,  # int() refuses more than 4,300 digits with a ValueError
    b"1e99999",
    b"NaN",
    b"-Infinity",
    b'"\\ud800"',
    b'"\\u0000"',
    b"[" + b"{}," * 30_000 + b"{}]",
    b'"' + b"x" * 70_000 + b'"',
    b'"\\' + b"\\" * 1000 + b'"',
    b"\xff\xfe[\x00]\x00",
    b"\xc3\x28",
    b"\x00",
    b"",
)
"""Raw JSON-ish bytes spliced into a document in place of a value."""
VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    -(2**64),
    10**400,
    float("inf"),
    float("nan"),
    "",
    " ",
    "x" * 300,
    "sha256:" + "0" * 64,
    "sha256:" + "0" * 63,
    "sha512:" + "f" * 128,
    "md5:abc",
    "../../etc/passwd",
    "/abs/path",
    "a\\b",
    "a\x00b",
    "\u202e\u0007\ud7ff",
    "v1",
    "ai/x:1",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.ai.gguf.v3",
    [],
    {},
    [1, [2, [3]]],
    {"a": {"b": {}}},
    ["a", "b"],
    {"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 1},
)
"""JSON values put in place of a subtree (``(0, path, value)``)."""
_PIECES = (*(bytes([c]) for c in b'[]{},:"\\'), b"\xff", b"\x00", b"\\u", b"1e", b"\r\n", b"--- ")
_PLACEHOLDER = "\x00splice\x00"

REPLACE, SPLICE, DELETE, TRUNCATE, FLIP, INSERT = range(6)
_MUTATION = st.tuples(st.integers(0, 5), st.integers(0, 1 << 16), st.integers(0, 1 << 16))
_BYTE_MUTATION = st.tuples(st.integers(TRUNCATE, INSERT), st.integers(0, 1 << 16), st.integers(0, 1 << 16))


def mutations(max_size: int = 4) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    """1 to ``max_size`` changes of a JSON document: replace, splice, delete (by path), truncate, flip, insert."""
    return st.lists(_MUTATION, min_size=1, max_size=max_size)


def byte_mutations(max_size: int = 4) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    """1 to ``max_size`` changes of bytes: truncate, flip, insert."""
    return st.lists(_BYTE_MUTATION, min_size=1, max_size=max_size)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) in ``doc``, the root first."""
    out: list[tuple[Any, ...]] = [prefix]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.extend(paths(value, (*prefix, key)))
    return out


def _edit(doc: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    """A copy of ``doc`` with ``path`` set to ``value`` (or deleted); unchanged when the path is gone."""
    if not path:
        return None if delete else value
    head, rest = path[0], path[1:]
    out: Any
    if isinstance(doc, dict) and head in doc:
        out = dict(doc)
    elif isinstance(doc, list) and isinstance(head, int) and head < len(doc):
        out = list(doc)
    else:
        return doc
    if delete and not rest:
        del out[head]
    else:
        out[head] = _edit(doc[head], rest, value, delete=delete)
    return out


def edit_json(seed: Any, changes: list[tuple[int, int, int]]) -> Any:
    """``seed`` after the replace and delete ``changes`` (the others are left to :func:`apply`)."""
    where = paths(seed)
    doc = seed
    for kind, a, b in changes:
        if kind == REPLACE:
            doc = _edit(doc, where[a % len(where)], VALUES[b % len(VALUES)])
        elif kind == DELETE:
            doc = _edit(doc, where[a % len(where)], None, delete=True)
    return doc


def apply(seed: Any, changes: list[tuple[int, int, int]]) -> bytes:
    """``seed`` serialised after ``changes`` (the first splice only: one hostile value is enough)."""
    doc = edit_json(seed, changes)
    splice = next(((a, b) for kind, a, b in changes if kind == SPLICE), None)
    if splice is not None:
        where = paths(doc)
        doc = _edit(doc, where[splice[0] % len(where)], _PLACEHOLDER)
    data = json.dumps(doc, allow_nan=True).encode()
    if splice is not None:
        data = data.replace(json.dumps(_PLACEHOLDER).encode(), HOSTILE_RAW[splice[1] % len(HOSTILE_RAW)], 1)
    return apply_bytes(data, changes)


def apply_bytes(data: bytes, changes: list[tuple[int, int, int]]) -> bytes:
    """``data`` after the truncate, flip and insert ``changes`` (positions modulo its length)."""
    for kind, a, b in changes:
        if kind == TRUNCATE:
            data = data[: a % (len(data) + 1)]
        elif kind == FLIP and data:
            i = a % len(data)
            data = data[:i] + bytes([data[i] ^ (b % 255 + 1)]) + data[i + 1 :]
        elif kind == INSERT:
            i = a % (len(data) + 1)
            data = data[:i] + _PIECES[b % len(_PIECES)] + data[i:]
    return data


class Peak:
    """The largest traced heap of the parser calls it ran (hypothesis' own work between them is not traced).

    ``call(fn, *args)`` runs ``fn`` under tracemalloc and returns what it returns (or raises what it raises);
    ``check()`` fails unless it ran at least :data:`EXAMPLES` calls, each peaking under :data:`MEMORY_LIMIT`."""

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self.limit = limit
        self.peak = 0
        self.calls = 0

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        tracemalloc.start()
        try:
            return fn(*args, **kwargs)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            self.peak = max(self.peak, peak)
            self.calls += 1

    def check(self) -> None:
        print(f"{self.calls} calls, peak {self.peak / (1 << 20):.1f} MiB traced")  # shown with pytest -s
        assert self.calls >= EXAMPLES, f"only {self.calls} calls of the parser"
        assert self.peak < self.limit, f"peak {self.peak >> 20} MiB traced, limit {self.limit >> 20} MiB"
