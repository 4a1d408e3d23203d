"""The manifest graph, and the one walk over it that the store, garbage collection, save and load share.

Edges: a manifest points at its config and layers, an index at its manifests, and a referrer (a model card, a
signature) at the manifest it is attached to, its ``subject``. The walk follows the first two forwards and the
third backwards: whatever reaches a blob reaches what is attached to it. Where the documents come from is the
caller's: the store's verified blobs, a scan of ``blobs/`` (gc), or the staged blobs of an archive (load).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import IntegrityError
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Index, Manifest
from modelctl.store.directory import blob_files, is_regular

MAX_MANIFEST = descriptor.MAX_MANIFEST
"""Blobs larger than this are never parsed as manifests (when looking for what references what)."""
MAX_DEPTH = 8
"""Indexes nested deeper than this are refused (a hostile archive could nest them without end)."""
DOCUMENTS = (*mt.MANIFESTS, *mt.INDEXES)
"""Media types whose blobs point at other blobs."""

Children = Callable[[Descriptor], Sequence[Descriptor]]
"""What a descriptor points at (empty for a config or a layer)."""
Referrers = Callable[[Digest], Iterable[Descriptor]]
"""The manifests attached to a digest."""


@dataclass(frozen=True, slots=True)
class Node:
    """One manifest or index: its own descriptor, what it points at, and what it is attached to."""

    desc: Descriptor
    children: tuple[Descriptor, ...]
    subject: Digest | None


@dataclass(frozen=True, slots=True)
class Step:
    """A blob the walk reached; ``referrer`` when reached as a manifest attached to something reached before."""

    desc: Descriptor
    referrer: bool


def children(doc: Manifest | Index) -> tuple[Descriptor, ...]:
    """What a manifest (config, then its distributable layers) or an index (its manifests) points at."""
    if isinstance(doc, Manifest):
        return doc.blobs
    return doc.manifests


def node(digest: Digest, data: bytes) -> Node:
    """Parse a stored document (IntegrityError when it is neither a manifest nor an index)."""
    doc = descriptor.parse(data)
    if isinstance(doc, Manifest):
        desc = Descriptor(media_type=doc.media_type, digest=digest, size=len(data), artifact_type=doc.artifact_type)
        return Node(desc, children(doc), doc.subject.digest if doc.subject else None)
    return Node(Descriptor(media_type=doc.media_type, digest=digest, size=len(data)), children(doc), None)


def scan(blobs_dir: Path) -> dict[Digest, Node]:
    """digest -> node of every blob in ``blobs_dir`` (``blobs/``, all algorithms) that parses as a manifest or an
    index, reading every blob (``modelctl verify`` reads them all anyway; the store's own commands ask its reference
    index, :mod:`modelctl.store.refs`, which reads each blob once)."""
    nodes: dict[Digest, Node] = {}
    for digest, path in blob_files(blobs_dir):
        found, _ = read_node(digest, path)
        if found is not None:
            nodes[digest] = found
    return nodes


def read_node(digest: Digest, path: Path) -> tuple[Node | None, bool]:
    """The blob's node (None: not a document) and whether that answer may be remembered: its content matched its
    digest, or it is too large to be read as a document at all (absent, unreadable or damaged: ask again later)."""
    try:
        st = path.lstat()
        if not is_regular(st.st_mode):
            return None, False
        if st.st_size > MAX_MANIFEST:
            return None, True
        data = path.read_bytes()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None, False
    if _digest.of_bytes(data, digest.algorithm) != digest:
        return None, False
    if data.lstrip()[:1] != b"{":
        return None, True
    try:
        return node(digest, data), True
    except IntegrityError:
        return None, True


def attached(nodes: Iterable[Node]) -> dict[Digest, list[Descriptor]]:
    """subject digest -> the manifests attached to it, in digest order."""
    out: dict[Digest, list[Descriptor]] = {}
    for n in sorted(nodes, key=lambda n: n.desc.digest):
        if n.subject is not None:
            out.setdefault(n.subject, []).append(n.desc)
    return out


def walk(
    roots: Iterable[Descriptor],
    children: Children,
    referrers: Referrers | None = None,
    *,
    max_depth: int | None = MAX_DEPTH,
    where: str = "",
) -> Iterator[Step]:
    """Every blob the roots reach, once: depth first, a document before what it points at, roots in order; then
    the referrers of everything reached (and what they reach) until nothing more is attached.

    A document more than ``max_depth`` levels below its root raises IntegrityError (``where`` prefixes the message).
    """
    seen: set[Digest] = set()
    reached: list[Digest] = []

    def descend(start: Descriptor, referrer: bool) -> Iterator[Step]:
        stack = [(start, 0, referrer)]
        while stack:
            desc, depth, via = stack.pop()
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            reached.append(desc.digest)
            yield Step(desc, via)
            below = children(desc)
            if below and max_depth is not None and depth > max_depth:
                raise IntegrityError(f"{where}indexes nested more than {max_depth} deep under {start.digest}")
            stack.extend((child, depth + 1, False) for child in reversed(below))

    for root in roots:
        yield from descend(root, False)
    if referrers is None:
        return
    i = 0
    while i < len(reached):
        for ref in referrers(reached[i]):
            yield from descend(ref, True)
        i += 1


def reachable(nodes: Mapping[Digest, Node], roots: Iterable[Descriptor]) -> set[Digest]:
    """Digests of everything the roots reach in a scanned graph (what garbage collection keeps)."""
    by_subject = attached(nodes.values())

    def below(desc: Descriptor) -> Sequence[Descriptor]:
        found = nodes.get(desc.digest)
        return found.children if found is not None else ()

    steps = walk(roots, below, lambda d: by_subject.get(d, ()), max_depth=None)
    return {step.desc.digest for step in steps}
