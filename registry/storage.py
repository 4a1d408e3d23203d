"""The registry's filesystem layout: content-addressed blobs shared by all repositories, per-repository links.

    ROOT/blobs/<alg>/<hex>                                    blob and manifest bytes, complete and verified
    ROOT/uploads/<id>/{data,repository}                       uploads in progress (never served)
    ROOT/repositories/<name>/_layers/<alg>/<hex>              empty link: the blob is readable in <name>
    ROOT/repositories/<name>/_manifests/revisions/<alg>/<hex>  the manifest's media type
    ROOT/repositories/<name>/_manifests/tags/<tag>            the tag's manifest digest
    ROOT/repositories/<name>/_referrers/<alg>/<subject hex>/<hex>  referrer descriptor (JSON)

``<alg>`` is ``sha256`` or ``sha512``: content is stored under the algorithm it was pushed by, as the client's
store keeps it. The same bytes pushed by both digests are two entries; each is verified with its own algorithm.
A referrer entry's name is its bare hex, whose length tells the algorithm (64 or 128 digits).

A file enters ``blobs/`` only by ``os.replace`` after its digest was verified; every small file is written to
a temporary name, fsynced and renamed, so a kill -9 never leaves a torn file where a reader looks.
Names and digests are validated by the caller (``registry.names``) and asserted again here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from modelctl import atomic
from modelctl.digest import Digest
from registry import manifests, names
from registry.catalog import RepositoryList
from registry.errors import RegistryHTTPError

_MANIFEST_CACHE_BYTES: Final = 64 * 1024 * 1024


def _parts(digest: Digest) -> tuple[str, str]:
    """(algorithm, hex) of a validated digest: both are safe path components (a known name, lowercase hex)."""
    parsed = names.stored_digest(digest)
    if parsed is None or parsed.algorithm not in names.ALGORITHMS:
        raise ValueError(f"refusing unvalidated digest {digest!r}")
    return parsed.algorithm, parsed.hex


class Storage:
    """Blobs, manifests, tags and referrers of every repository under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_root = root / "blobs"
        self.uploads_dir = root / "uploads"
        self.repos_dir = root / "repositories"
        for d in (*map(self.blobs_dir, names.ALGORITHMS), self.uploads_dir, self.repos_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._manifest_cache: OrderedDict[str, bytes] = OrderedDict()
        self._manifest_cache_size = 0
        self.catalog = RepositoryList(self._walk_repositories)

    # -- paths ---------------------------------------------------------------------------------------
    def blobs_dir(self, algorithm: str) -> Path:
        if algorithm not in names.ALGORITHMS:
            raise ValueError(f"refusing unsupported algorithm {algorithm!r}")
        return self.blobs_root / algorithm

    def blob_path(self, digest: Digest) -> Path:
        algorithm, hex_digits = _parts(digest)
        return self.blobs_root / algorithm / hex_digits

    def repo_dir(self, name: str) -> Path:
        if not names.is_name(name):
            raise ValueError(f"refusing unvalidated repository name {name!r}")
        return self.repos_dir / name

    def _layer_link(self, name: str, digest: Digest) -> Path:
        return self.repo_dir(name) / "_layers" / "/".join(_parts(digest))

    def _revision(self, name: str, digest: Digest) -> Path:
        return self.repo_dir(name) / "_manifests" / "revisions" / "/".join(_parts(digest))

    def _tags_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "_manifests" / "tags"

    def _tag(self, name: str, tag: str) -> Path:
        if not names.is_tag(tag):
            raise ValueError(f"refusing unvalidated tag {tag!r}")
        return self._tags_dir(name) / tag

    def _referrers_dir(self, name: str, subject: Digest) -> Path:
        return self.repo_dir(name) / "_referrers" / "/".join(_parts(subject))

    # -- blobs ---------------------------------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def blob_linked(self, name: str, digest: Digest) -> bool:
        """The blob is readable through ``name``: linked there, and present in the shared store."""
        return self._layer_link(name, digest).exists() and self.has_blob(digest)

    def link_blob(self, name: str, digest: Digest) -> None:
        link = self._layer_link(name, digest)
        if link.exists():
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        link.touch()
        atomic.fsync_dir(link.parent)
        self.catalog.add(name)

    def unlink_blob(self, name: str, digest: Digest) -> bool:
        try:
            self._layer_link(name, digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def put_blob_bytes(self, digest: Digest, data: bytes) -> None:
        """Store small verified content (manifests) in the shared store."""
        path = self.blob_path(digest)
        if not path.exists():
            atomic.write(path, data)

    # -- manifests -----------------------------------------------------------------------------------
    def revision_media_type(self, name: str, digest: Digest) -> str | None:
        """The stored media type of manifest ``digest`` in ``name``; None when it is not there."""
        try:
            return self._revision(name, digest).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_manifest(self, digest: Digest) -> bytes | None:
        cached = self._manifest_cache.get(digest)
        if cached is not None:
            self._manifest_cache.move_to_end(digest)
            return cached
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        self._manifest_cache[digest] = data
        self._manifest_cache_size += len(data)
        while self._manifest_cache_size > _MANIFEST_CACHE_BYTES:
            _, old = self._manifest_cache.popitem(last=False)
            self._manifest_cache_size -= len(old)
        return data

    def put_manifest(self, name: str, raw: bytes, info: manifests.ManifestInfo, tag: str | None) -> None:
        """Store the bytes, then the revision link, the referrer entry and the tag, in that order."""
        self.put_blob_bytes(info.digest, raw)
        atomic.write(self._revision(name, info.digest), info.media_type.encode())
        if info.subject is not None:
            entry = self._referrers_dir(name, info.subject) / _parts(info.digest)[1]
            atomic.write(entry, json.dumps(info.referrer_descriptor()).encode())
        if tag is not None:
            atomic.write(self._tag(name, tag), info.digest.encode())
        self.catalog.add(name)

    def resolve_tag(self, name: str, tag: str, *, ns: str | None = None) -> Digest | None:
        """The digest ``tag`` points at. ``ns`` (a mirror's ``?ns=<registry>``) is not used: a registry's storage
        holds one namespace."""
        try:
            digest = self._tag(name, tag).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return names.stored_digest(digest)

    def tag_manifest(self, name: str, tag: str, digest: Digest) -> None:
        atomic.write(self._tag(name, tag), digest.encode())

    def delete_tag(self, name: str, tag: str) -> bool:
        try:
            self._tag(name, tag).unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_manifest(self, name: str, digest: Digest) -> bool:
        """Delete a manifest from ``name``: its tags, its referrer entry, then the revision link."""
        revision = self._revision(name, digest)
        if not revision.exists():
            return False
        for tag in self.tags(name) or []:
            if self.resolve_tag(name, tag) == digest:
                self.delete_tag(name, tag)
        raw = self.read_manifest(digest)
        if raw is not None:
            with contextlib.suppress(RegistryHTTPError):
                info = manifests.parse(raw, revision.read_text())
                if info.subject is not None:
                    (self._referrers_dir(name, info.subject) / _parts(digest)[1]).unlink(missing_ok=True)
        revision.unlink(missing_ok=True)
        return True

    # -- discovery -----------------------------------------------------------------------------------
    def repo_exists(self, name: str) -> bool:
        d = self.repo_dir(name)
        return (d / "_manifests").is_dir() or (d / "_layers").is_dir()

    def tags(self, name: str, *, ns: str | None = None) -> list[str] | None:
        """Sorted tags of ``name``; None when the repository does not exist (``ns``: see :meth:`resolve_tag`)."""
        try:
            entries = os.listdir(self._tags_dir(name))
        except (FileNotFoundError, NotADirectoryError):
            return [] if self.repo_exists(name) else None
        return sorted(e for e in entries if names.is_tag(e))

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        d = self._referrers_dir(name, subject)
        try:
            entries = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out: list[dict[str, Any]] = []
        for entry in entries:
            if atomic.is_temp(entry):
                continue
            try:
                descriptor = json.loads((d / entry).read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            digest = names.from_hex(entry)
            if isinstance(descriptor, dict) and digest is not None and self.revision_media_type(name, digest):
                out.append(descriptor)
        return out

    def repositories(self) -> tuple[str, ...]:
        """Every repository name, sorted (walked once, then kept current: see :mod:`registry.catalog`)."""
        return self.catalog.names()

    def _walk_repositories(self) -> list[str]:
        found: list[str] = []
        for dirpath, dirnames, _ in os.walk(self.repos_dir):
            if "_manifests" in dirnames or "_layers" in dirnames:
                found.append(os.path.relpath(dirpath, self.repos_dir).replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return [n for n in found if names.is_name(n)]

    def iter_blobs(self) -> Iterator[tuple[Digest, Path]]:
        """(digest, path) of every file named like a blob in the shared store, every algorithm, sorted."""
        yield from _iter_named(self.blobs_root)

    def iter_revisions(self) -> Iterator[tuple[str, Digest]]:
        """(repository, manifest digest) for every stored manifest; used by garbage collection."""
        for name in self.repositories():
            for digest, _ in _iter_named(self.repo_dir(name) / "_manifests" / "revisions"):
                yield name, digest

    def iter_layer_links(self) -> Iterator[tuple[str, Digest, Path]]:
        for name in self.repositories():
            for digest, path in _iter_named(self.repo_dir(name) / "_layers"):
                yield name, digest, path


def _iter_named(base: Path) -> Iterator[tuple[Digest, Path]]:
    """(digest, path) of every ``base/<algorithm>/<hex>`` whose name is a well-formed digest of that algorithm."""
    for algorithm in names.ALGORITHMS:
        d = base / algorithm
        try:
            entries = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            digest = names.stored_name(entry, algorithm)
            if digest is not None:
                yield digest, d / entry
