"""The local store: an OCI image layout under ``$MODELCTL_HOME/store`` holding every pulled model.

Why an OCI layout rather than a private format: other tools read it as it is. ``skopeo inspect --raw
oci:$MODELCTL_HOME/store:docker.io/ai/smollm2:135M-Q4_1`` prints a model's manifest, ``skopeo copy`` exports
it, and a layout copied to an offline machine is a valid store there. The spec fixes the shape::

    oci-layout              {"imageLayoutVersion":"1.0.0"}
    index.json              one entry per tag; annotation org.opencontainers.image.ref.name = full reference
    blobs/sha256/<hex>      content, named by its digest; a file here was complete and correct when it arrived
    .lock  .tmp/            ours (dotfiles, ignored by OCI tools): the cross-process lock, temp files
    .unflushed.json         ours: blobs committed without an fsync of their data (see modelctl.writeback)

Invariants: a blob enters ``blobs/`` only by an atomic rename after its digest was verified. One committed without
a flush (``commit_blob(..., flush=False)``, a pull's layers) is listed in ``.unflushed.json`` with the boot id
before the rename, and stays listed until it is known to be on disk (fsynced once it has settled, or re-verified);
after a reboot (a kernel crash or power loss may have lost its page-cache bytes) :meth:`Layout.recover_unflushed`
re-hashes it and deletes it if damaged, so ``blobs/`` may then lack a blob a tag needs (``pull`` fetches it again,
``run`` reports it missing). Every other blob is fsynced before its rename. ``index.json``
is rewritten atomically (temp file, fsync, rename) under the lock, so readers never see a torn index and
concurrent writers never lose an entry; a tag never points at a manifest whose config or layers are missing.
Removing a tag deletes only the blobs that no other tag needs; blobs nothing references (a pull killed before
it tagged) stay until :meth:`Layout.prune`, because a concurrent pull commits its layers before it tags.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelctl import atomic, writeback
from modelctl import digest as _digest
from modelctl.errors import DigestMismatch, IntegrityError, InvalidReference, ModelctlError, NotFound
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Manifest

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
TMP_DIR = ".tmp"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'

MAX_MANIFEST = 4 << 20
"""Blobs larger than this are never parsed as manifests (when looking for what references what)."""
MAX_NAME = 1024
LOCK_TIMEOUT = 300.0

_HEX64 = re.compile(r"[a-f0-9]{64}")
_HEX_PREFIX = re.compile(r"[a-f0-9]{1,64}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DiskUsage:
    """What ``modelctl df`` shows."""

    blobs: int
    total_bytes: int
    referenced_bytes: int
    unreferenced_bytes: int
    """Blobs no tag needs (interrupted pulls, removed models' leftovers): what ``modelctl prune`` can free."""
    models: int
    """Distinct tagged manifests."""
    tags: int


class Layout:
    """An OCI image layout used as modelctl's content-addressed model store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths and setup ------------------------------------------------------------------------------------

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def ensure(self) -> None:
        """Create the layout's files if missing; idempotent and safe when processes race."""
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        (self.root / TMP_DIR).mkdir(exist_ok=True)
        if not (self.root / LAYOUT_FILE).is_file():
            self._write_atomic(self.root / LAYOUT_FILE, LAYOUT_VERSION)
        if not self.index_path.is_file():
            with self.locked():
                if not self.index_path.is_file():
                    self._write_atomic(self.index_path, EMPTY_INDEX)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's cross-process lock; re-entrant within a process (one lock object per path)."""
        import filelock  # lazily: it costs ~25 ms of start-up that read-only commands never need

        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(
            os.path.abspath(self.root / LOCK_FILE), timeout=LOCK_TIMEOUT, is_singleton=True
        )
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ModelctlError(
                f"the local store {self.root} stayed locked for {LOCK_TIMEOUT:.0f} s",
                hint="another modelctl process is using it; wait for it or stop it",
            ) from None
        try:
            yield
        finally:
            lock.release()

    # -- blobs ----------------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; a malformed (maybe hostile) digest raises IntegrityError, never a path."""
        return self.blobs_dir / _digest.hex_of(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return _is_regular(st.st_mode) and (size is None or st.st_size == size)

    def read_blob(self, digest: str, *, max_size: int = 16 << 20) -> bytes:
        """A small blob's verified bytes. A corrupt blob is deleted (a pull fetches it again) and reported."""
        path = self.blob_path(digest)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise IntegrityError(
                        f"blob {digest} is {size} bytes, more than the {max_size} allowed here",
                        hint="the store holds an unexpected file; remove the model and pull it again",
                    )
                data = f.read(max_size + 1)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"blob {digest} is not in the local store", hint="pull the model again") from None
        actual = _digest.of_bytes(data)
        if actual != digest:
            error = DigestMismatch(digest, actual, what=f"stored blob {digest}")
            try:
                path.unlink(missing_ok=True)
                error.hint = "the local copy was corrupt and has been removed; pull the model again"
            except OSError:
                error.hint = f"the local copy is corrupt; delete {path} and pull the model again"
            raise error
        return data

    def write_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (verified against ``digest`` when given) and return its digest."""
        actual = _digest.of_bytes(data)
        if digest is not None and actual != _digest.check(digest):
            raise DigestMismatch(digest, actual, what="blob")
        self.ensure()
        self._write_atomic(self.blob_path(actual), data)
        return actual

    def commit_blob(self, path: Path, digest: str, *, flush: bool = True) -> Path:
        """Move an already-verified file (same filesystem, e.g. from ingest/) into ``blobs/`` atomically.

        ``flush=False`` skips the fsync of the data (it costs more than a fast download): the blob is first listed
        in the journal of unflushed blobs, durably, then renamed. Without a boot id (not Linux) it flushes anyway.
        """
        target = self.blob_path(digest)
        self.ensure()
        boot = None if flush else writeback.boot_id()
        if boot is None:
            _fsync_file(path)
            self._move_in(path, target)
            return target
        size = os.stat(path).st_size
        with self.locked():
            entries = [e for e in writeback.load(self.root) or [] if e.digest != digest]
            entries.append(writeback.Entry(digest, boot, time.time(), size))
            self._write_atomic(self.root / writeback.JOURNAL, writeback.dump(entries))
            self._move_in(path, target)
        return target

    def _move_in(self, path: Path, target: Path) -> None:
        os.utime(path)  # prune() measures a blob's age from its arrival in blobs/, not its last write
        os.replace(path, target)
        _fsync_dir(self.blobs_dir)

    def recover_unflushed(self) -> list[str]:
        """Settle the journal of unflushed blobs; return the digests of blobs deleted as damaged by a crash.

        Call it when the store is opened, before any blob is used. Without a journal it costs one failed open and
        no lock; with only young entries of this boot, a read, a stat per entry and no lock. Otherwise, under the
        lock: entries of another boot are re-hashed and their blob deleted if its size or digest is wrong; entries
        of this boot older than ``writeback.SETTLE_SECONDS`` are fsynced; both are dropped, and so are entries whose
        blob is gone (which is how ``remove`` and ``prune`` clean up after themselves: they leave the journal alone).
        """
        entries = writeback.load(self.root)
        if entries is None:
            return []
        boot, now = writeback.boot_id(), time.time()

        def due(e: writeback.Entry) -> bool:
            return writeback.suspect(e, boot) or writeback.settled(e, boot, now) or not self.has_blob(e.digest)

        if entries and not any(due(e) for e in entries):
            return []
        removed: list[str] = []
        with self.locked():
            kept: list[writeback.Entry] = []
            for entry in writeback.load(self.root) or []:
                path = self.blob_path(entry.digest)
                try:
                    if writeback.suspect(entry, boot):
                        if not writeback.intact(path, entry):
                            path.unlink()
                            removed.append(entry.digest)
                    elif writeback.settled(entry, boot, now):
                        _fsync_file(path)
                    else:
                        path.stat()
                        kept.append(entry)
                except (FileNotFoundError, NotADirectoryError):
                    continue
            if removed:
                _fsync_dir(self.blobs_dir)
            if kept:
                self._write_atomic(self.root / writeback.JOURNAL, writeback.dump(kept))
            else:
                (self.root / writeback.JOURNAL).unlink(missing_ok=True)
        return removed

    # -- tags -----------------------------------------------------------------------------------------------

    def tag(self, name: str, desc: Descriptor) -> None:
        """Point ``name`` at manifest ``desc`` (replacing its previous target); the model must be complete."""
        _check_name(name)
        _digest.check(desc.digest)
        if not desc.media_type or _has_control(desc.media_type):
            raise IntegrityError(f"malformed media type {desc.media_type!r} for {name}")
        entry = Descriptor(
            media_type=desc.media_type,
            digest=desc.digest,
            size=desc.size,
            annotations={**desc.annotations, mt.REF_NAME: name},
            artifact_type=desc.artifact_type,
            platform=desc.platform,
        ).to_json()
        self.ensure()
        with self.locked():
            self._check_complete(name, desc)
            doc = self._load_index()
            manifests: list[Any] = doc["manifests"]
            positions = [i for i, item in enumerate(manifests) if _ref_name(item) == name]
            if positions and len(positions) == 1 and manifests[positions[0]] == entry:
                return
            if positions:
                manifests[positions[0]] = entry
                for i in reversed(positions[1:]):
                    del manifests[i]
            else:
                manifests.append(entry)
            self._save_index(doc)

    def untag(self, name: str) -> Descriptor | None:
        """Drop ``name`` from the index; return the descriptor it pointed at (None if absent). Keeps blobs."""
        with self.locked():
            doc = self._load_index()
            manifests: list[Any] = doc["manifests"]
            found = [item for item in manifests if _ref_name(item) == name]
            if not found:
                return None
            doc["manifests"] = [item for item in manifests if _ref_name(item) != name]
            self._save_index(doc)
            return Descriptor.from_json(found[0], where="index.json entry")

    def resolve(self, name: str) -> Descriptor | None:
        for entry_name, desc in self.entries():
            if entry_name == name:
                return desc
        return None

    def entries(self) -> list[tuple[str, Descriptor]]:
        """(name, manifest descriptor) of every tagged entry, in index order; untagged entries are skipped."""
        out: list[tuple[str, Descriptor]] = []
        for item in self._load_index()["manifests"]:
            name = _ref_name(item)
            if name is not None:
                out.append((name, Descriptor.from_json(item, where="index.json entry")))
        return out

    def find_by_digest(self, prefix: str) -> list[tuple[str, Descriptor]]:
        """Entries whose manifest digest starts with ``prefix``: a model ID (``3f8eb4da87fa``) or a digest."""
        hex_prefix = prefix.removeprefix("sha256:")
        if not _HEX_PREFIX.fullmatch(hex_prefix):
            return []
        return [(n, d) for n, d in self.entries() if d.digest.removeprefix("sha256:").startswith(hex_prefix)]

    # -- removal --------------------------------------------------------------------------------------------

    def remove(self, name: str) -> list[str]:
        """Untag ``name`` and delete its blobs that no remaining entry needs; return the deleted digests."""
        with self.locked():
            desc = self.untag(name)
            if desc is None:
                raise NotFound(f"model {name} is not in the local store", hint="see: modelctl list")
            graph = self._manifest_graph()
            live = _reachable(graph, self._roots())
            doomed = _reachable(graph, [desc.digest]) - live
            return self._delete(doomed, graph)

    def prune(self, grace_seconds: float = 3600) -> list[str]:
        """Delete blobs no index entry needs that arrived over ``grace_seconds`` ago (and stale temp files).

        The grace period protects pulls in progress: they commit layers before they tag the manifest.
        """
        if not self.blobs_dir.is_dir():
            return []
        cutoff = time.time() - grace_seconds
        with self.locked():
            graph = self._manifest_graph()
            live = _reachable(graph, self._roots())
            doomed: set[str] = set()
            for path in self.blobs_dir.iterdir():
                if not _HEX64.fullmatch(path.name) or f"sha256:{path.name}" in live:
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if _is_regular(st.st_mode) and st.st_mtime < cutoff:
                    doomed.add(f"sha256:{path.name}")
            deleted = self._delete(doomed, graph)
            tmp = self.root / TMP_DIR
            if tmp.is_dir():
                for path in tmp.iterdir():
                    try:
                        if path.lstat().st_mtime < cutoff:
                            path.unlink()
                    except (FileNotFoundError, IsADirectoryError, PermissionError):
                        continue
            return deleted

    def disk_usage(self) -> DiskUsage:
        entries = self.entries()
        graph = self._manifest_graph()
        live = _reachable(graph, self._roots())
        blobs = total = referenced = 0
        if self.blobs_dir.is_dir():
            for path in self.blobs_dir.iterdir():
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if not _HEX64.fullmatch(path.name) or not _is_regular(st.st_mode):
                    continue
                blobs += 1
                total += st.st_size
                if f"sha256:{path.name}" in live:
                    referenced += st.st_size
        return DiskUsage(
            blobs=blobs,
            total_bytes=total,
            referenced_bytes=referenced,
            unreferenced_bytes=total - referenced,
            models=len({d.digest for _, d in entries}),
            tags=len(entries),
        )

    # -- internals ------------------------------------------------------------------------------------------

    def _check_complete(self, name: str, desc: Descriptor) -> None:
        if not self.has_blob(desc.digest, desc.size):
            raise NotFound(
                f"cannot tag {name}: manifest {desc.digest} ({desc.size} bytes) is not in the local store",
                hint="write the manifest blob before tagging it",
            )
        doc = descriptor.parse(self.read_blob(desc.digest, max_size=MAX_MANIFEST), desc.media_type)
        if isinstance(doc, Manifest):
            for child in (doc.config, *doc.layers):
                if not self.has_blob(child.digest, child.size):
                    raise NotFound(
                        f"cannot tag {name}: blob {child.digest} of its manifest is missing",
                        hint=f"run: modelctl pull {name}",
                    )

    def referrers(self, digest: str) -> list[Descriptor]:
        """Stored manifests whose ``subject`` is ``digest`` (e.g. a model card attached by ``package --card``)."""
        _digest.check(digest)
        out = []
        for child, (_, subject) in self._manifest_graph().items():
            if subject == digest:
                raw = self.blob_path(child).read_bytes()
                doc = descriptor.parse(raw)
                if isinstance(doc, Manifest):
                    out.append(
                        Descriptor(
                            media_type=doc.media_type, digest=child, size=len(raw), artifact_type=doc.artifact_type
                        )
                    )
        return out

    def _roots(self) -> list[str]:
        """Digests of every index entry, tagged or not (entries written by other tools count too)."""
        items = self._load_index()["manifests"]
        return [Descriptor.from_json(item, where="index.json entry").digest for item in items]

    def _manifest_graph(self) -> dict[str, tuple[tuple[str, ...], str | None]]:
        """digest -> (blobs it references, its subject) of every stored blob that parses as a manifest."""
        graph: dict[str, tuple[tuple[str, ...], str | None]] = {}
        if not self.blobs_dir.is_dir():
            return graph
        for path in self.blobs_dir.iterdir():
            if not _HEX64.fullmatch(path.name):
                continue
            try:
                st = path.lstat()
                if not _is_regular(st.st_mode) or st.st_size > MAX_MANIFEST:
                    continue
                data = path.read_bytes()
            except (FileNotFoundError, PermissionError):
                continue
            if data.lstrip()[:1] != b"{":
                continue
            try:
                doc = descriptor.parse(data)
            except IntegrityError:
                continue
            if isinstance(doc, Manifest):
                children = (doc.config.digest, *(layer.digest for layer in doc.layers))
                graph[f"sha256:{path.name}"] = (children, doc.subject.digest if doc.subject else None)
            else:
                graph[f"sha256:{path.name}"] = (tuple(m.digest for m in doc.manifests), None)
        return graph

    def _delete(self, doomed: set[str], graph: dict[str, tuple[tuple[str, ...], str | None]]) -> list[str]:
        # Manifests first: a crash half-way never leaves a manifest whose layers are gone.
        order = sorted(doomed, key=lambda d: (d not in graph, d))
        deleted: list[str] = []
        for digest in order:
            try:
                self.blob_path(digest).unlink()
            except FileNotFoundError:
                continue
            deleted.append(digest)
        if deleted:
            _fsync_dir(self.blobs_dir)
        return deleted

    def _load_index(self) -> dict[str, Any]:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            empty: dict[str, Any] = json.loads(EMPTY_INDEX)
            return empty
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise IntegrityError(
                f"malformed {self.index_path}: not an OCI image index",
                hint="restore it from a backup, or move the store aside and pull again",
            )
        for item in doc["manifests"]:
            Descriptor.from_json(item, where=f"entry of {self.index_path}")
            if not isinstance(item.get("annotations", {}), dict):
                raise IntegrityError(f"malformed entry of {self.index_path}: annotations must be an object")
        return doc

    def _save_index(self, doc: dict[str, Any]) -> None:
        self._write_atomic(self.index_path, json.dumps(doc, separators=(",", ":")).encode())

    def _write_atomic(self, target: Path, data: bytes) -> None:
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(target, tmp_dir=tmp_dir) as f:
            f.write(data)
        _fsync_dir(target.parent)


def _reachable(graph: dict[str, tuple[tuple[str, ...], str | None]], roots: Iterable[str]) -> set[str]:
    """Everything the roots reference, plus referrers (e.g. a model card) whose subject is reachable."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(graph.get(d, ((), None))[0])
        stack = [d for d, (_, subject) in graph.items() if subject in seen and d not in seen]
    return seen


def _ref_name(item: Any) -> str | None:
    annotations = item.get("annotations") if isinstance(item, dict) else None
    name = annotations.get(mt.REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c.isspace() for c in text)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or _has_control(name):
        raise InvalidReference(
            f"invalid model name {name!r} for the local store",
            hint="use a full reference without spaces or control characters",
        )


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
