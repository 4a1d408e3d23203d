"""The store's reference index (``.refs.db``): what each blob is and which documents point at it, looked up by key.

Why: removing one model must not cost more in a store of 10,000 models than in one of 100. Deciding which of its
blobs no other model needs used to take the whole reference graph (every manifest's children, every tag walked).
Here each edge ``parent -> child`` is a row indexed by child, so the question "does anything still reach this
blob?" walks up from the few blobs of the removed model instead of down from every tag.

Why SQLite (the standard library's): point look-ups, one atomic transaction per change and its own cross-process
locking, where a JSON cache must be read and written whole. The index is a cache of facts that never change (a
blob's content is fixed by its digest), so it is rebuilt from ``blobs/`` whenever it is missing, unreadable or of
another version; only blobs whose content matched their digest (or too large to be a document) are remembered.

Keeping it true to ``blobs/`` without listing 30,000 files each time: each ``blobs/<algorithm>/`` directory's
identity (device, inode, mtime) is recorded when the rows were last made to match its listing; a directory
whose identity differs has had files added or removed since, and is listed again (only unknown files are read).
Errors lean towards keeping: a row for a blob that is gone keeps what it points at alive until the next listing
(a leak, never a loss); a blob the index does not know yet can only be a document that nothing tagged reaches
(every tagged manifest is checked against the index before anything is deleted, see :meth:`Refs.learn`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import NoSpace
from modelctl.oci.descriptor import Descriptor
from modelctl.store import graph
from modelctl.store.directory import ALGORITHMS

VERSION = 1
"""Of the schema; an index of another version is rebuilt."""
_HEX = frozenset(_digest.HEX_DIGITS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    doc INTEGER NOT NULL,
    media_type TEXT, size INTEGER, artifact_type TEXT, subject TEXT
);
CREATE INDEX IF NOT EXISTS blobs_subject ON blobs (subject) WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS edges (
    parent TEXT NOT NULL, pos INTEGER NOT NULL, child TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (parent, pos)
);
CREATE INDEX IF NOT EXISTS edges_child ON edges (child);
"""


class Refs:
    """An open reference index over ``blobs_dir``; use as a context manager (one connection per command)."""

    def __init__(self, path: Path | None, blobs_dir: Path) -> None:
        """``path`` None (or a store that cannot be written): an index in memory, filled from ``blobs/`` anew."""
        self.path = path
        self.blobs_dir = blobs_dir
        self._db = _open(path)

    def __enter__(self) -> Refs:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self._db.close()
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
            # SQLITE_FULL: the disk filled while the index was written; the transaction was rolled back, so the
            # index still matches what it said before, and nothing was deleted past what it recorded
            where = str(self.path.parent) if self.path else ""
            raise NoSpace(
                f"no space left to update the store's reference index ({error})",
                hint="free disk space (modelctl prune --partials removes interrupted downloads) and run it again",
                directory=where,
            ) from error

    # --- keeping the rows true to blobs/ ---

    def sync(self, *, full: bool = False) -> None:
        """Make the rows match ``blobs/``: every directory whose identity changed (``full``: every directory) is
        listed, files not met before are read, rows of files gone are dropped."""
        for algorithm in ALGORITHMS:
            directory = self.blobs_dir / algorithm
            try:
                before = _identity(directory)
            except (FileNotFoundError, NotADirectoryError):
                before = ""
            key = f"dir:{algorithm}"
            if not full and before == self._meta(key):
                continue
            names = _listing(directory, algorithm) if before else set()
            prefix = f"{algorithm}:"
            known = {
                row[0]
                for row in self._db.execute(
                    "SELECT digest FROM blobs WHERE digest >= ? AND digest < ?", (prefix, f"{algorithm};")
                )
            }
            with self._db:
                gone = known - names
                if gone:
                    self._drop(gone)
                self._read_blobs(sorted(names - known))
                # the identity seen before the listing: a change during it shows as a difference next time
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, before))

    def changed(self, deleted: Iterable[str]) -> None:
        """Drop the rows of blobs this command deleted (under the store's lock), and take the directories as they
        are now as listed: what changed in them was this command's own doing."""
        with self._db:
            self._drop(set(deleted))
            for algorithm in ALGORITHMS:
                key = f"dir:{algorithm}"
                if self._meta(key) is None:
                    continue  # never listed: the next sync lists it
                try:
                    now = _identity(self.blobs_dir / algorithm)
                except (FileNotFoundError, NotADirectoryError):
                    now = ""
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, now))

    def learn(self, digests: Iterable[str], *, since: str | None = None, now: str | None = None) -> None:
        """Read the blobs among ``digests`` the index does not know, and the documents below them.

        Called with every index entry before anything is deleted: a tag written by another tool (or a blob that
        arrived in the same clock tick as the last listing) is read here, so the answer to "is this blob still
        needed?" never misses a tagged model. ``since`` / ``now``: stamps of ``index.json`` before and after this
        command's own change to it; when every entry was known at ``since`` (the last call recorded it), the
        entries are not looked up again (an untag adds none)."""
        if since is not None and since == self._meta("entries"):
            todo: list[str] = []
        else:
            known = {row[0] for row in self._db.execute("SELECT digest FROM blobs WHERE doc = 1")}
            todo = [d for d in set(digests) - known if _digest.parse(d) is not None]
        while todo:
            with self._db:
                self._read_blobs(todo)
            below = self._db.execute(
                f"SELECT DISTINCT child FROM edges WHERE parent IN ({_marks(todo)})", todo
            ).fetchall()
            children = [row[0] for row in below]
            present = {
                row[0]
                for row in self._db.execute(f"SELECT digest FROM blobs WHERE digest IN ({_marks(children)})", children)
            }
            todo = [c for c in children if c not in present]
        if now is not None:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('entries', ?)", (now,))

    # --- questions ---

    def nodes(self) -> dict[Digest, graph.Node]:
        """digest -> node of every known document (as :func:`graph.scan` gives them)."""
        children: dict[str, list[Descriptor]] = {}
        for parent, child, media_type, size in self._db.execute(
            "SELECT parent, child, media_type, size FROM edges ORDER BY parent, pos"
        ):
            children.setdefault(parent, []).append(Descriptor(media_type=media_type, digest=Digest(child), size=size))
        out: dict[Digest, graph.Node] = {}
        for d, media_type, size, artifact_type, subject in self._db.execute(
            "SELECT digest, media_type, size, artifact_type, subject FROM blobs WHERE doc = 1"
        ):
            digest = Digest(d)
            desc = Descriptor(media_type=media_type, digest=digest, size=size, artifact_type=artifact_type)
            out[digest] = graph.Node(desc, tuple(children.get(d, ())), Digest(subject) if subject else None)
        return out

    def documents(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` known to be manifests or indexes."""
        items = list(digests)
        found: set[str] = set()
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            rows = self._db.execute(f"SELECT digest FROM blobs WHERE doc = 1 AND digest IN ({_marks(part)})", part)
            found.update(row[0] for row in rows)
        return found

    def attached(self, digest: str) -> list[Descriptor]:
        """The documents whose ``subject`` is ``digest``, in digest order."""
        rows = self._db.execute(
            "SELECT digest, media_type, size, artifact_type FROM blobs WHERE subject = ? ORDER BY digest", (digest,)
        )
        return [Descriptor(media_type=m, digest=Digest(d), size=s, artifact_type=a) for d, m, s, a in rows]

    def reach(self, start: str) -> set[str]:
        """Every blob ``start`` reaches: its children, theirs, and the documents attached to anything reached."""
        seen = {start}
        frontier = [start]
        while frontier:
            marks = _marks(frontier)
            rows = self._db.execute(
                f"SELECT child FROM edges WHERE parent IN ({marks}) "
                f"UNION SELECT digest FROM blobs WHERE subject IN ({marks})",
                [*frontier, *frontier],
            )
            frontier = [row[0] for row in rows if row[0] not in seen]
            seen.update(frontier)
        return seen

    def needed(self, candidates: Iterable[str], roots: set[str]) -> set[str]:
        """The candidates that ``roots`` still reach (through documents pointing at them, or as what is attached to
        a reached blob): walks up from each candidate, never down from the roots."""
        live: dict[str, bool] = {}

        def reached(digest: str, path: set[str]) -> bool:
            if digest in roots:
                return True
            if digest in live:
                return live[digest]
            path.add(digest)
            above = [
                row[0]
                for row in self._db.execute(
                    "SELECT parent FROM edges WHERE child = ? UNION SELECT subject FROM blobs "
                    "WHERE digest = ? AND subject IS NOT NULL",
                    (digest, digest),
                )
            ]
            found = any(p not in path and reached(p, path) for p in above)
            path.discard(digest)
            if found or not path:  # a "no" found while a caller's walk is open may be that walk's cycle: not kept
                live[digest] = found
            return found

        return {c for c in candidates if reached(c, set())}

    # --- rows ---

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _drop(self, digests: set[str]) -> None:
        items = list(digests)
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            self._db.execute(f"DELETE FROM edges WHERE parent IN ({_marks(part)})", part)
            self._db.execute(f"DELETE FROM blobs WHERE digest IN ({_marks(part)})", part)

    def _read_blobs(self, digests: Iterable[str]) -> None:
        """Rows for blobs not met before (inside a transaction): a document's node and edges, or "no document"."""
        for d in digests:
            digest = _digest.parse(d)
            if digest is None:
                continue
            found, known = graph.read_node(digest, self.blobs_dir / digest.algorithm / digest.hex)
            if not known:
                continue  # absent, unreadable or not matching its digest: read again next time
            if found is None:
                self._db.execute("INSERT OR REPLACE INTO blobs (digest, doc) VALUES (?, 0)", (d,))
                continue
            self._db.execute(
                "INSERT OR REPLACE INTO blobs VALUES (?, 1, ?, ?, ?, ?)",
                (d, found.desc.media_type, found.desc.size, found.desc.artifact_type, found.subject),
            )
            self._db.execute("DELETE FROM edges WHERE parent = ?", (d,))
            self._db.executemany(
                "INSERT INTO edges VALUES (?, ?, ?, ?, ?)",
                [(d, i, c.digest, c.media_type, c.size) for i, c in enumerate(found.children)],
            )


def _open(path: Path | None) -> sqlite3.Connection:
    """The index at ``path`` (created, or rebuilt when unreadable or of another version), else one in memory."""
    if path is not None:
        for _ in range(2):
            try:
                db = sqlite3.connect(path, timeout=60, isolation_level=None)
                with contextlib.closing(db.execute("PRAGMA user_version")) as cur:
                    version = cur.fetchone()[0]
                if version not in (0, VERSION):
                    db.close()
                    path.unlink()
                    continue
                return _prepared(db)
            except sqlite3.DatabaseError:  # not a database (damaged), or a read-only store
                with contextlib.suppress(NameError, sqlite3.Error):
                    db.close()
                with contextlib.suppress(OSError):
                    if path.exists() and os.access(path.parent, os.W_OK):
                        path.unlink()
                        continue
                break
            except OSError:
                break
    return _prepared(sqlite3.connect(":memory:", isolation_level=None))


def _prepared(db: sqlite3.Connection) -> sqlite3.Connection:
    # ``with db:`` is one transaction, begun IMMEDIATE before its first change: two processes writing at once queue
    # on SQLite's lock (``timeout``) instead of failing on a lock upgrade
    db.isolation_level = "IMMEDIATE"
    db.execute("PRAGMA synchronous = NORMAL")  # a cache: a lost last transaction is found by the next listing
    with db:
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {VERSION}")
    return db


def _identity(directory: Path) -> str:
    st = directory.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _listing(directory: Path, algorithm: str) -> set[str]:
    """The digests the files of ``blobs/<algorithm>/`` stand for (names that are not a digest's hex are skipped)."""
    length = _digest.HEX_LENGTHS[algorithm]
    try:
        with os.scandir(directory) as entries:
            return {f"{algorithm}:{e.name}" for e in entries if len(e.name) == length and _HEX.issuperset(e.name)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _marks(items: list[str]) -> str:
    return ",".join("?" * len(items))
