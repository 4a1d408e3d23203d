"""Garbage collection: blobs no index entry reaches through the manifest graph go, manifests first."""

from __future__ import annotations

import time
from dataclasses import dataclass

from modelctl.atomic import fsync_dir
from modelctl.digest import Digest
from modelctl.errors import NotFound
from modelctl.store import graph
from modelctl.store.directory import TMP_DIR, blob_files, is_regular
from modelctl.store.index import Tags


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
            desc = self.untag(name)
            if desc is None:
                raise NotFound(f"model {name} is not in the local store", hint="see: modelctl list")
            nodes = graph.scan(self.blobs_dir, self.graph_cache)
            live = graph.reachable(nodes, self.roots())
            doomed = graph.reachable(nodes, [desc]) - live
            return self._delete(doomed, nodes)

    def prune(self, grace_seconds: float = 3600) -> list[Digest]:
        """Delete blobs no index entry needs that arrived over ``grace_seconds`` ago (and stale temp files).

        The grace period protects pulls in progress: they commit layers before they tag the manifest.
        """
        if not self.blobs_dir.is_dir():
            return []
        cutoff = time.time() - grace_seconds
        with self.locked():
            nodes = graph.scan(self.blobs_dir, self.graph_cache)
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
            deleted = self._delete(doomed, nodes)
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
        live = graph.reachable(graph.scan(self.blobs_dir, self.graph_cache), self.roots())
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

    def _delete(self, doomed: set[Digest], nodes: dict[Digest, graph.Node]) -> list[Digest]:
        # Manifests first: a crash half-way never leaves a manifest whose layers are gone.
        order = sorted(doomed, key=lambda d: (d not in nodes, d))
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
