"""The sorted listing of repository names that ``/v2/_catalog`` pages through.

Walking ``repositories/`` costs a ``listdir`` per directory, so it is done once, on the first catalog request;
after that the storage tells the listing of every repository it creates (its first blob link or manifest), and a
page is a binary search plus a slice of the same sorted tuple, whatever the number of repositories. The tuple is
rebuilt only after a new repository arrived. Another process writing into the same root is seen after a restart
(a registry root has one server; ``gc`` removes blobs, never repositories).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable


class RepositoryList:
    """Repository names, sorted, built by ``walk`` on first use and kept current by :meth:`add`."""

    def __init__(self, walk: Callable[[], Iterable[str]]) -> None:
        self._walk = walk
        self._lock = threading.Lock()  # manifests are stored from worker threads
        self._names: list[str] | None = None
        self._snapshot: tuple[str, ...] | None = None

    def add(self, name: str) -> None:
        """Note a repository that now exists (cheap when it is known already)."""
        with self._lock:
            if self._names is None:
                return  # not listed yet: the first walk will find it
            at = bisect.bisect_left(self._names, name)
            if at == len(self._names) or self._names[at] != name:
                self._names.insert(at, name)
                self._snapshot = None

    def names(self) -> tuple[str, ...]:
        """Every repository name, sorted; the same tuple until a repository is added."""
        with self._lock:
            if self._names is None:
                self._names = sorted(set(self._walk()))
            if self._snapshot is None:
                self._snapshot = tuple(self._names)
            return self._snapshot
