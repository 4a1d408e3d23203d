"""Garbage collection: blobs no index entry reaches through the manifest graph go, manifests first.

Removing one model asks the reference index (:mod:`modelctl.store.refs`) which of its blobs anything still reaches,
walking up from those few blobs, so its cost does not grow with the store; ``prune`` and ``df`` judge every blob and
walk the whole graph down from the tags.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelctl.atomic import fsync_dir
from modelctl.digest import Digest
from modelctl.errors import NotFound
from modelctl.store import graph
from modelctl.store.directory import OLD_GRAPH_FILE, TMP_DIR, blob_files, is_regular
from modelctl.store.index import Tags

if TYPE_CHECKING:
    from modelctl.store.refs import Refs


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


class Collector(Tags):
    """Removing models, pruning what nothing reaches, and measuring both."""

    def remove(self, name: str) -> list[Digest]:
        """Untag ``name`` and delete its blobs that no remaining entry needs; return the deleted digests."""
        with self.locked():
            before = self.index_stamp()
            desc = self.untag(name)
            if desc is None:
                raise NotFound(f"model {name} is not in the local store", hint="see: modelctl list")
            with self.refs() as refs:
                refs.sync()
                roots = self.root_digests()
                refs.learn(roots | {desc.digest}, since=before, now=self.index_stamp())
                candidates = refs.reach(desc.digest)
                doomed = candidates - refs.needed(candidates, roots)
                deleted = self._delete({Digest(d) for d in doomed}, refs.documents(doomed))
                refs.changed(deleted)
            return deleted

    def refs(self) -> Refs:
        """The store's reference index, opened (in memory where the store cannot be written). Imported here:
        sqlite3 is needed only by the commands that remove blobs or walk referrers, not by every start-up."""
        from modelctl.store.refs import Refs

        with contextlib.suppress(OSError):
            (self.root / OLD_GRAPH_FILE).unlink(missing_ok=True)  # the JSON cache it replaced
        return Refs(self.refs_path if self.root.is_dir() else None, self.blobs_dir)

    def _scan(self) -> dict[Digest, graph.Node]:
        """Every document in ``blobs/``, each read once in the store's life (the reference index remembers it)."""
        with self.refs() as refs:
            refs.sync(full=True)
            return refs.nodes()

    def prune(self, grace_seconds: float = 3600) -> list[Digest]:
        """Delete blobs no index entry needs that arrived over ``grace_seconds`` ago (and stale temp files).

        The grace period protects pulls in progress: they commit layers before they tag the manifest.
        """
        if not self.blobs_dir.is_dir():
            return []
        cutoff = time.time() - grace_seconds
        with self.locked(), self.refs() as refs:
            refs.sync(full=True)
            nodes = refs.nodes()
            live = graph.reachable(nodes, self.roots())
            doomed: set[Digest] = set()
            for digest, path in blob_files(self.blobs_dir):
                if digest in live:
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if is_regular(st.st_mode) and st.st_mtime < cutoff:
                    doomed.add(digest)
            deleted = self._delete(doomed, set(nodes))
            refs.changed(deleted)
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
        live = graph.reachable(self._scan(), self.roots())
        blobs = total = referenced = 0
        if self.blobs_dir.is_dir():
            for digest, path in blob_files(self.blobs_dir):
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if not is_regular(st.st_mode):
                    continue
                blobs += 1
                total += st.st_size
                if digest in live:
                    referenced += st.st_size
        return DiskUsage(
            blobs=blobs,
            total_bytes=total,
            referenced_bytes=referenced,
            unreferenced_bytes=total - referenced,
            models=len({d.digest for _, d in entries}),
            tags=len(entries),
        )

    def _delete(self, doomed: set[Digest], documents: Collection[str]) -> list[Digest]:
        # Manifests first: a crash half-way never leaves a manifest whose layers are gone.
        order = sorted(doomed, key=lambda d: (d not in documents, d))
        deleted: list[Digest] = []
        for digest in order:
            try:
                self.blob_path(digest).unlink()
            except FileNotFoundError:
                continue
            deleted.append(digest)
        for algorithm in sorted({d.algorithm for d in deleted}):
            fsync_dir(self.algorithm_dir(algorithm))
        return deleted
