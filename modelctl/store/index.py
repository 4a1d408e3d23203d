"""Tags: ``index.json``, one entry per full reference, rewritten atomically under the store's lock.

Cost at fleet scale: a command reads the index once, and writes it at most once, whatever the number of references
it handles; an entry is parsed and validated when first used (a look-up by name parses one, a listing all). The
parsed index is kept (:class:`_Snapshot`) and used again while the file is the one it
was read from (same device, inode, size, mtime and ctime: every writer replaces it by a rename, so another
process's write shows as a new inode) or the one this object last wrote. Tags given inside :meth:`Tags.batch` are
collected and written together when it ends: a 1,000-model ``pull --locked`` is one read-modify-write, not 1,000.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from modelctl import digest as _digest
from modelctl.errors import IntegrityError, InvalidReference, ModelctlError, NotFound
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import graph
from modelctl.store.blobs import Blobs
from modelctl.store.directory import EMPTY_INDEX, stored

MAX_NAME = 1024

Identity = tuple[int, int, int, int, int]
"""What tells one ``index.json`` from another without reading it: (device, inode, size, mtime_ns, ctime_ns)."""


class _Snapshot:
    """One version of ``index.json``: its document, tags by name, and each entry parsed (validated) when first
    used. A look-up by name parses one entry; a listing, or the roots of garbage collection, all of them once."""

    def __init__(self, identity: Identity | None, doc: dict[str, Any], parsed: list[Descriptor | None]) -> None:
        self.identity = identity
        """Of the file it was read from (or written to); None when there was no file."""
        self.doc = doc
        """The document; its ``manifests`` list is never changed in place (a write builds a new snapshot)."""
        self.items: list[Any] = doc["manifests"]
        self.parsed = parsed
        """``items`` parsed so far (None: not yet), in the same order."""
        self._by_name: dict[str, int] | None = None
        self.digests: set[str] | None = None
        """Of the entries, as :meth:`Tags.root_digests` reads them (once per snapshot)."""
        self.repeated: set[str] = set()
        """Names more than one entry carries (another tool wrote them); known once :attr:`by_name` was built."""

    @property
    def by_name(self) -> dict[str, int]:
        """Tag -> the position of its first entry; built when first asked (``rm`` writes a snapshot it never
        looks names up in)."""
        if self._by_name is None:
            self._by_name = {}
            for i, item in enumerate(self.items):
                name = _ref_name(item)
                if name is not None and self._by_name.setdefault(name, i) != i:
                    self.repeated.add(name)
        return self._by_name

    def at(self, i: int, where: str = "index.json entry") -> Descriptor:
        desc = self.parsed[i]
        if desc is None:
            desc = self.parsed[i] = Descriptor.from_json(self.items[i], where=where)
        return desc

    def all(self) -> list[Descriptor]:
        return [self.at(i) for i in range(len(self.items))]


class Tags(Blobs):
    """The layout's index: names (full references in ``org.opencontainers.image.ref.name``) -> manifests."""

    _snapshot: _Snapshot | None = None
    _pending: dict[str, Descriptor] | None = None
    """Tags given inside :meth:`batch`, not yet written: name -> the entry (its ref name annotated)."""

    def tag(self, name: str, desc: Descriptor) -> None:
        """Point ``name`` at manifest ``desc`` (replacing its previous target); the model must be complete."""
        self.tag_many([(name, desc)])

    def tag_many(self, items: Iterable[tuple[str, Descriptor]]) -> None:
        """Point each name at its manifest: one index read and at most one write under the lock, however many.

        Inside :meth:`batch` the tags are only recorded (and seen by this object's reads); they are written when it
        ends. A model found incomplete is not tagged; the others are, then the first such error is raised."""
        entries = {name: _entry(name, desc) for name, desc in items}
        if self._pending is not None:
            self._pending.update(entries)
            return
        if not entries or self._tagged_already(entries):
            return
        self.ensure()
        with self.locked():
            missing: list[NotFound] = []
            for name, entry in list(entries.items()):
                try:
                    self._check_complete(name, entry)
                except NotFound as exc:
                    missing.append(exc)
                    del entries[name]
            self._write_tags(entries)
        if missing:
            raise missing[0]

    def _tagged_already(self, entries: dict[str, Descriptor]) -> bool:
        """Whether every name already points at exactly its entry: then there is nothing to write, and no lock to
        take (a pull of models the store holds; the blobs were checked when they were tagged and by the pull)."""
        snap = self._read()
        return all(
            name in snap.by_name and name not in snap.repeated and snap.at(snap.by_name[name]) == entry
            for name, entry in entries.items()
        )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the tags given inside and write them together at the end (also when it ends in an error: what
        completed stays tagged). Nested batches join the outer one."""
        if self._pending is not None:
            yield
            return
        self._pending = {}
        try:
            yield
        except BaseException:
            with suppress(ModelctlError):  # the error that ended the batch is the one to report
                self._flush()
            raise
        self._flush()

    def untag(self, name: str) -> Descriptor | None:
        """Drop ``name`` from the index; return the descriptor it pointed at (None if absent). Keeps blobs."""
        with self.locked():
            snap = self._read()
            if name not in snap.by_name:
                return None
            at = snap.by_name[name]
            found = snap.at(at)
            if name in snap.repeated:
                keep = [i for i, item in enumerate(snap.items) if _ref_name(item) != name]
                self._save(snap, [snap.items[i] for i in keep], [snap.parsed[i] for i in keep])
            else:
                self._save(snap, snap.items[:at] + snap.items[at + 1 :], snap.parsed[:at] + snap.parsed[at + 1 :])
            return found

    def resolve(self, name: str) -> Descriptor | None:
        """The manifest ``name`` points at (None if untagged): a dictionary look-up, not a walk of the index."""
        if self._pending and name in self._pending:
            return self._pending[name]
        snap = self._read()
        position = snap.by_name.get(name)
        return snap.at(position) if position is not None else None

    def entries(self) -> list[tuple[str, Descriptor]]:
        """(name, manifest descriptor) of every tagged entry, in index order; untagged entries are skipped."""
        snap = self._read()
        pending = self._pending or {}
        out: list[tuple[str, Descriptor]] = []
        for desc in snap.all():
            name = desc.annotations.get(mt.REF_NAME)
            if name is not None:
                out.append((name, pending.get(name, desc)))
        out.extend((name, desc) for name, desc in pending.items() if name not in snap.by_name)
        return out

    def find_by_digest(self, prefix: str) -> list[tuple[str, Descriptor]]:
        """Entries whose manifest digest starts with ``prefix``: a model ID (``3f8eb4da87fa``) or a digest."""
        algorithm, colon, hex_prefix = prefix.rpartition(":")
        if colon and algorithm not in _digest.HEX_LENGTHS:
            return []
        if not _digest.is_hex_prefix(hex_prefix, algorithm or _digest.SHA512):
            return []
        return [
            (n, d)
            for n, d in self.entries()
            if (not algorithm or d.digest.algorithm == algorithm) and d.digest.hex.startswith(hex_prefix)
        ]

    def roots(self) -> list[Descriptor]:
        """Every index entry, tagged or not (entries written by other tools count too): where the graph starts."""
        return [*self._read().all(), *(self._pending or {}).values()]

    def root_digests(self) -> set[str]:
        """The digests :meth:`roots` would give, read from the entries as they are (not parsed): what garbage
        collection checks blobs against, at a cost that does not grow with parsing 10,000 entries. A malformed
        value matches no blob (and :meth:`roots` would refuse it)."""
        snap = self._read()
        if snap.digests is None:
            snap.digests = {d for d in (item.get("digest") for item in snap.items) if isinstance(d, str)}
        return snap.digests | {desc.digest for desc in (self._pending or {}).values()}

    def index_stamp(self) -> str:
        """What tells this version of ``index.json`` from any other (see :data:`Identity`)."""
        return repr(self._read().identity)

    def _check_complete(self, name: str, desc: Descriptor) -> None:
        if not self.has_blob(desc.digest, desc.size):
            raise NotFound(
                f"cannot tag {name}: manifest {desc.digest} ({desc.size} bytes) is not in the local store",
                hint="write the manifest blob before tagging it",
            )
        raw = self.read_blob(desc.digest, max_size=graph.MAX_MANIFEST)
        doc = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
        if isinstance(doc, descriptor.Manifest):
            for child in graph.children(doc):
                if not self.has_blob(child.digest, child.size):
                    raise NotFound(
                        f"cannot tag {name}: blob {child.digest} of its manifest is missing",
                        hint=f"run: modelctl pull {name}",
                    )

    def flush(self) -> None:
        """Write the batch's tags now (before a long download, so a crash does not lose them); the batch goes on."""
        if self._pending:
            pending, self._pending = self._pending, None
            try:
                self.tag_many(pending.items())
            finally:
                self._pending = {}

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self.tag_many(pending.items())

    def _write_tags(self, entries: dict[str, Descriptor]) -> None:
        """Apply ``entries`` (name -> entry) to the index in one write; none if nothing changes. Under the lock."""
        snap = self._read()
        items: list[Any] = list(snap.items)
        parsed = list(snap.parsed)
        positions: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            name = _ref_name(item)
            if name is not None and name in entries:
                positions.setdefault(name, []).append(i)
        dropped: set[int] = set()
        for name, entry in entries.items():
            at = positions.get(name, [])
            if len(at) == 1 and snap.at(at[0]) == entry:
                continue
            if at:
                items[at[0]], parsed[at[0]] = entry.to_json(), entry
                dropped.update(at[1:])  # duplicates of the name
            else:
                items.append(entry.to_json())
                parsed.append(entry)
        if len(items) != len(snap.items) or any(a is not b for a, b in zip(items, snap.items, strict=True)):
            kept = [i for i in range(len(items)) if i not in dropped]
            self._save(snap, [items[i] for i in kept], [parsed[i] for i in kept])

    def _read(self) -> _Snapshot:
        """The index as it is on disk: the kept snapshot while the file is unchanged, else read and validated."""
        try:
            with self.index_path.open("rb") as f:
                identity = _identity(os.fstat(f.fileno()))
                if self._snapshot is not None and self._snapshot.identity == identity:
                    return self._snapshot
                raw = f.read()
        except FileNotFoundError:
            if self._snapshot is None or self._snapshot.identity is not None:
                self._snapshot = _Snapshot(None, json.loads(EMPTY_INDEX), [])
            return self._snapshot
        self._snapshot = self._parse(identity, raw)
        return self._snapshot

    def _parse(self, identity: Identity, raw: bytes) -> _Snapshot:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise IntegrityError(
                f"malformed {self.index_path}: not an OCI image index",
                hint="restore it from a backup, or move the store aside and pull again",
            )
        for item in doc["manifests"]:  # the shape only: each entry is parsed when used
            if not isinstance(item, dict) or not isinstance(item.get("annotations", {}), dict):
                raise IntegrityError(f"malformed entry of {self.index_path}: not a descriptor object")
        return _Snapshot(identity, doc, [None] * len(doc["manifests"]))

    def _save(self, snap: _Snapshot, items: list[Any], parsed: list[Descriptor | None]) -> None:
        """Replace the index (under the lock) and keep what was written as the snapshot: no read back."""
        doc = {**snap.doc, "manifests": items}
        self.write_atomic(self.index_path, json.dumps(doc, separators=(",", ":")).encode())
        self._snapshot = _Snapshot(_identity(self.index_path.stat()), doc, parsed)


def _ref_name(item: Any) -> str | None:
    try:  # the common case first: 10,000 entries are looked through per command at fleet scale
        name = item["annotations"][mt.REF_NAME]
    except (KeyError, TypeError, IndexError):
        return None
    return name if type(name) is str else None


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _entry(name: str, desc: Descriptor) -> Descriptor:
    """The index entry for ``name`` -> ``desc``, checked: a valid name, a stored digest, a sane media type."""
    _check_name(name)
    stored(desc.digest)
    if not desc.media_type or _has_control(desc.media_type):
        raise IntegrityError(f"malformed media type {desc.media_type!r} for {name}")
    return Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        annotations={**desc.annotations, mt.REF_NAME: name},
        artifact_type=desc.artifact_type,
        platform=desc.platform,
    )


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c.isspace() for c in text)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or _has_control(name):
        raise InvalidReference(
            f"invalid model name {name!r} for the local store",
            hint="use a full reference without spaces or control characters",
        )
