"""The layout's directory: its fixed files, the cross-process lock, and atomic, durable writes of small files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelctl import atomic
from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import ModelctlError

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
TMP_DIR = ".tmp"
REFS_FILE = ".refs.db"
"""What each blob is and what points at it (:mod:`modelctl.store.refs`)."""
OLD_GRAPH_FILE = ".graph.json"
"""The JSON cache ``.refs.db`` replaced; removed when met."""
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
LOCK_TIMEOUT = 300.0

DEFAULT_ALGORITHM = _digest.SHA256
"""The algorithm of the digests modelctl computes itself (``blobs/sha256/<hex>``); blobs named by another source's
sha512 digest live beside them in ``blobs/sha512/<hex>``, as the OCI image layout spec allows."""
ALGORITHMS = tuple(_digest.HEX_LENGTHS)
"""The algorithms the store keeps blobs of, one directory each under ``blobs/``."""


def stored(digest: str) -> Digest:
    """``digest`` parsed (sha256 or sha512, well-formed hex): a hostile value never builds a path."""
    return Digest(digest)


def blob_name(algorithm: str, name: str) -> Digest | None:
    """The digest a file name in ``blobs/<algorithm>/`` stands for; None for any other name or algorithm."""
    return _digest.parse(f"{algorithm}:{name}") if algorithm in ALGORITHMS else None


def blob_files(blobs_dir: Path) -> Iterator[tuple[Digest, Path]]:
    """Every file named like a blob under ``blobs_dir/<algorithm>/`` with the digest it stands for (unchecked)."""
    for algorithm in ALGORITHMS:
        try:
            paths = list((blobs_dir / algorithm).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for path in paths:
            digest = blob_name(algorithm, path.name)
            if digest is not None:
                yield digest, path


class Directory:
    """The root of an OCI image layout: paths, setup, the lock; the store's concepts build on it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def blobs_dir(self) -> Path:
        """``blobs/``, holding one directory per algorithm (``sha256/``, and ``sha512/`` once a blob needs it)."""
        return self.root / "blobs"

    def algorithm_dir(self, algorithm: str = DEFAULT_ALGORITHM) -> Path:
        return self.blobs_dir / algorithm

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def refs_path(self) -> Path:
        return self.root / REFS_FILE

    def ensure(self) -> None:
        """Create the layout's files if missing; idempotent and safe when processes race."""
        self.algorithm_dir().mkdir(parents=True, exist_ok=True)
        (self.root / TMP_DIR).mkdir(exist_ok=True)
        if not (self.root / LAYOUT_FILE).is_file():
            self.write_atomic(self.root / LAYOUT_FILE, LAYOUT_VERSION)
        if not self.index_path.is_file():
            with self.locked():
                if not self.index_path.is_file():
                    self.write_atomic(self.index_path, EMPTY_INDEX)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's cross-process lock; re-entrant within a process (one lock object per path)."""
        import filelock  # lazily: it costs ~25 ms of start-up that read-only commands never need

        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(os.path.abspath(self.root / LOCK_FILE), timeout=LOCK_TIMEOUT, is_singleton=True)
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

    def write_atomic(self, target: Path, data: bytes) -> None:
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        atomic.write(target, data, tmp_dir=tmp_dir)


def is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
