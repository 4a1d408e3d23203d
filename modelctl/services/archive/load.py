"""load: import models from an OCI image layout tar (ours, skopeo's, any tool's), verifying every blob first.

``load`` reads the tar in one pass (a file or a pipe): it never extracts by member name; each
``blobs/<algorithm>/<hex>`` member (sha256 or sha512) is streamed into a temp file in the store's ``.tmp/`` while
that hash runs, and compared with the name. Only when every blob arrived intact, and every document the store's
graph walk reaches from the tagged entries has its children present with the sizes their descriptors say, does
anything enter ``blobs/`` (atomic renames), and only then are the references tagged. A hostile or damaged archive
leaves the store as it was, and so does Ctrl-C, SIGTERM (``Interrupted``) or a full disk (``NoSpace``) half-way:
the staged files are removed.
"""

from __future__ import annotations

import os
import secrets
import stat
import tarfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Self

from modelctl import artifact, atomic
from modelctl import digest as _digest
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import INTERRUPTS, DigestMismatch, IntegrityError, Interrupted, NotFound, shown
from modelctl.oci import descriptor, safejson
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services.archive import names
from modelctl.services.archive.counted import Counted
from modelctl.services.archive.result import ArchivedModel, ArchiveResult, Progress
from modelctl.store import MAX_MANIFEST, TMP_DIR, Layout, graph
from modelctl.store import models as local

CHUNK = 1 << 20
MAX_SMALL = 4 << 20
"""index.json and oci-layout larger than this are refused (they are a few KiB)."""
MAX_HEADER = 64 << 10
"""A pax or GNU long-name header larger than this is refused before tarfile reads it into memory."""
MAX_MEMBERS = 1 << 14
"""Members an archive may have: tarfile keeps a TarInfo per member, even when streaming."""
MAX_LISTED = 100
"""Ignored member names reported (an archive of many stray files must not fill the memory with their names)."""


def load(
    config: Config,
    source: BinaryIO,
    *,
    name: str = "archive",
    progress: Progress | None = None,
    as_name: str | None = None,
) -> ArchiveResult:
    """Import an OCI layout tar (ours, skopeo's, any tool's) from ``source``, verifying every blob as it streams.

    ``as_name`` (``load --name``) names what is loaded: a repository for the archive's tags, or one reference
    (see :mod:`modelctl.services.archive.names`). Raises IntegrityError (exit 5) for a hostile, truncated or corrupt
    archive, UsageError (exit 2) when its names need ``--name`` or contradict it; the store is then unchanged (no
    blob committed, nothing tagged).
    """
    chosen = names.target(as_name) if as_name is not None else None
    store = local.layout(config)
    store.ensure()
    staging = _Staging(store)
    counted = Counted(source)
    try:
        with staging:
            index_raw, skipped = _read_archive(counted, name, store, staging, progress)
            listed = _parse_index(index_raw, name)
            documents = _documents(store, staging, name)
            attached = {n.desc.digest for n in documents if n.subject is not None}
            entries = names.assign(listed, name, chosen, attached)
            keep, referrers = _plan(store, staging, entries, name, documents)
            _check_models(store, staging, entries, name)
            with store.locked():
                new_blobs = 0
                for digest in keep:
                    staged = staging.blobs.get(digest)
                    if staged is not None and not store.has_blob(digest):
                        store.commit_blob(staged, digest)
                        new_blobs += 1
                tagged = [(ref_name, desc) for ref_name, desc in entries if ref_name is not None]
                store.tag_many(tagged)  # one index write for the archive's tags, however many
                models = [ArchivedModel(reference=ref_name, digest=desc.digest) for ref_name, desc in tagged]
            unused = sorted(set(staging.sizes) - keep)
            return ArchiveResult(
                models=tuple(models),
                referrers=referrers,
                blobs=len(keep),
                bytes=sum(staging.sizes[d] for d in keep if d in staging.sizes),
                new_blobs=new_blobs,
                skipped=(*skipped, *(f"blobs/{d.algorithm}/{d.hex}" for d in unused)),
            )
    except INTERRUPTS as exc:
        raise Interrupted.by(exc, _interrupted(counted, name)) from None
    except OSError as exc:
        if not atomic.disk_full(exc):
            raise
        read, total = _position(counted)
        raise atomic.no_space(
            staging.dir,
            total if total is not None else read,
            f"loading {name}",
            at_least=total is None,
            hint=f"{atomic.SPACE_HINT}; nothing was loaded",
        ) from exc


def load_from_path(
    config: Config, path: Path, *, progress: Progress | None = None, as_name: str | None = None
) -> ArchiveResult:
    if as_name is not None:
        names.target(as_name)  # a bad --name is the first thing to say
    if not Path(path).is_file():
        raise NotFound(f"archive {path} does not exist", hint="give the file modelctl save wrote")
    with Path(path).open("rb") as f:
        return load(config, f, name=str(path), progress=progress, as_name=as_name)


def _position(counted: Counted) -> tuple[int, int | None]:
    """(bytes of the archive read, its size when it is a file): the numbers of an interrupted or disk-full load."""
    try:
        st = os.fstat(counted.stream.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError, AttributeError):
        total = None
    return counted.count, total


def _interrupted(counted: Counted, name: str) -> str:
    read, total = _position(counted)
    of = f" of {total}" if total is not None else ""
    return (
        f"interrupted: {read}{of} bytes of {name} read, no model was tagged (the partial files were removed); "
        "run the same command to load it"
    )


class _Staging:
    """Verified blobs waiting in the store's ``.tmp/`` (same filesystem: committing is a rename).

    Flat files named ``load.<pid>.<random>.<hex>``: a killed load leaves files that ``prune`` removes.
    """

    def __init__(self, store: Layout) -> None:
        self.dir = store.root / TMP_DIR
        self.prefix = f"load.{os.getpid()}.{secrets.token_hex(4)}."
        self.blobs: dict[Digest, Path] = {}
        """digest -> staged file (blobs the store did not have)."""
        self.sizes: dict[Digest, int] = {}
        """digest -> size of every blob in the archive (staged or already stored)."""

    def __enter__(self) -> _Staging:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self.blobs.values():
            path.unlink(missing_ok=True)  # committed ones were renamed away already

    def path(self, digest: Digest) -> Path:
        return self.dir / f"{self.prefix}{digest.hex}"


def _safe_parts(member: tarfile.TarInfo, archive: str) -> list[str]:
    """The member's name as path components; a name that could escape a directory is refused."""
    name = member.name
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise IntegrityError(
            f"{archive}: refused member {shown(name)}: absolute or malformed name",
            hint="the archive is not a plain OCI layout; nothing was loaded",
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise IntegrityError(
            f"{archive}: refused member {shown(name)}: its name leaves the archive (..)",
            hint="the archive is hostile or corrupt; nothing was loaded",
        )
    return parts


def _kind(member: tarfile.TarInfo) -> str | None:
    """None for what may be read (a plain file or a directory), else what the member is."""
    if member.isdir():
        return None
    if member.issym():
        return f"a symbolic link (to {shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {shown(member.linkname)})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    if member.isreg():
        return None
    return f"an entry of type {member.type!r}"


def _read_archive(
    source: Counted, archive: str, store: Layout, staging: _Staging, progress: Progress | None
) -> tuple[bytes, list[str]]:
    """One pass over the tar: stage and verify every blob; return index.json's bytes and the ignored names."""
    index_raw: bytes | None = None
    skipped: list[str] = []
    try:
        with tarfile.open(fileobj=source, mode="r|*", tarinfo=_Header) as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise IntegrityError(
                        f"{archive} has more than {MAX_MEMBERS} members: not a model archive",
                        hint="nothing was loaded",
                    )
                parts = _safe_parts(member, archive)
                what = _kind(member)
                if what is not None:
                    raise IntegrityError(
                        f"{archive}: refused member {shown(member.name)}: it is {what}",
                        hint="an OCI layout archive holds plain files only; nothing was loaded",
                    )
                if member.isdir():
                    continue
                if parts == ["index.json"]:
                    if index_raw is not None:
                        raise IntegrityError(f"{archive} holds two index.json files", hint="nothing was loaded")
                    index_raw = _small(tar, member, archive)
                elif parts == ["oci-layout"]:
                    _check_layout_file(_small(tar, member, archive), archive)
                elif len(parts) == 3 and parts[0] == "blobs" and parts[1] in _digest.HEX_LENGTHS:
                    digest = _digest.parse(f"{parts[1]}:{parts[2]}")
                    if digest is None:
                        raise IntegrityError(
                            f"{archive}: refused member {shown(member.name)}: not a {parts[1]} blob name"
                        )
                    _stage(tar, member, digest, archive, store, staging)
                    if progress is not None:
                        progress(digest, member.size)
                elif parts[:1] == ["blobs"]:
                    raise IntegrityError(
                        f"{archive}: unsupported blob {shown(member.name)}",
                        hint="modelctl reads sha256 and sha512 blobs only; nothing was loaded",
                    )
                elif len(skipped) < MAX_LISTED:
                    skipped.append(member.name)
    except _OversizedHeader as exc:
        raise IntegrityError(f"{archive}: refused {exc}", hint="nothing was loaded") from None
    except (tarfile.TarError, EOFError) as exc:
        raise IntegrityError(
            f"{archive} is truncated or not a tar archive ({exc})",
            hint="copy the archive again (compare its sha256 with the original); nothing was loaded",
        ) from None
    if index_raw is None:
        raise IntegrityError(
            f"{archive} has no index.json: not an OCI image layout archive",
            hint="write archives with: modelctl save, or skopeo copy ... oci-archive:FILE:REF",
        )
    return index_raw, skipped


class _OversizedHeader(tarfile.HeaderError):
    """A pax or GNU long-name header over :data:`MAX_HEADER` bytes."""


class _Header(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header into memory whole, however large it says it is: this refuses
    one over :data:`MAX_HEADER` bytes as soon as its block is decoded."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _LONG_HEADERS and info.size > MAX_HEADER:
            raise _OversizedHeader(f"a tar header of {info.size} bytes (the limit is {MAX_HEADER})")
        return info


_LONG_HEADERS = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: str) -> bytes:
    if member.size > MAX_SMALL:
        raise IntegrityError(f"{archive}: {member.name} is {member.size} bytes, more than the {MAX_SMALL} allowed")
    f = tar.extractfile(member)
    assert f is not None  # a regular file
    data = f.read()
    if len(data) != member.size:
        raise EOFError(f"{member.name} is cut short")
    return data


def _check_layout_file(raw: bytes, archive: str) -> None:
    try:
        doc = safejson.loads(raw, what=f"oci-layout of {archive}", max_size=MAX_SMALL)
    except IntegrityError:
        doc = None
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise IntegrityError(f"{archive}: unsupported oci-layout {raw[:100]!r}", hint="expected imageLayoutVersion 1.x")


def _stage(
    tar: tarfile.TarFile, member: tarfile.TarInfo, digest: Digest, archive: str, store: Layout, staging: _Staging
) -> None:
    """Stream one blob member through its name's hash: into a staged file, or nowhere when the store has it already."""
    f = tar.extractfile(member)
    assert f is not None
    # A blob seen before in this archive, or already stored: verify it, write it nowhere.
    known = digest in staging.sizes or store.has_blob(digest, member.size)
    target = None if known else staging.path(digest)
    out = target.open("wb") if target is not None else None
    try:
        actual, count = _digest.copy_hashed(f, out, algorithm=digest.algorithm, chunk=CHUNK)
    except BaseException:
        if out is not None:
            out.close()
            target.unlink(missing_ok=True)  # type: ignore[union-attr]
        raise
    if out is not None:
        out.close()
    if count != member.size:
        if target is not None:
            target.unlink(missing_ok=True)
        raise EOFError(f"{member.name} is cut short")
    if actual != digest:
        if target is not None:
            target.unlink(missing_ok=True)
        error = DigestMismatch(digest, actual, what=f"blob {digest} in {archive}")
        error.hint = "the archive is corrupt or was tampered with; nothing was loaded"
        raise error
    if target is not None:
        staging.blobs[digest] = target
    staging.sizes.setdefault(digest, count)


def _parse_index(raw: bytes, archive: str) -> names.Listed:
    """(ref.name annotation or None, manifest descriptor) for each entry of the archive's index.json."""
    doc = safejson.loads(raw, what=f"index.json of {archive}", max_size=MAX_SMALL, hint="nothing was loaded")
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise IntegrityError(f"{archive}: malformed index.json: not an OCI image index")
    out: list[tuple[str | None, Descriptor]] = []
    for item in doc["manifests"]:
        desc = Descriptor.from_json(item, where=f"index.json entry of {archive}")
        if desc.media_type not in (*mt.MANIFESTS, *mt.INDEXES):
            raise IntegrityError(f"{archive}: index.json entry {desc.digest} has media type {shown(desc.media_type)}")
        plain = Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size)
        out.append((desc.annotations.get(mt.REF_NAME), plain))
    return out


def _read_document(store: Layout, staging: _Staging, digest: Digest, archive: str, what: str = "manifest") -> bytes:
    """A manifest, index or config of the archive (staged) or of the store, re-checked against its digest."""
    staged = staging.blobs.get(digest)
    path = staged if staged is not None else store.blob_path(digest)
    with path.open("rb") as f:
        data = f.read(MAX_MANIFEST + 1)
    if len(data) > MAX_MANIFEST or _digest.of_bytes(data, digest.algorithm) != digest:
        raise IntegrityError(f"{archive}: {what} {digest} is unreadable or larger than {MAX_MANIFEST} bytes")
    return data


def _check_models(store: Layout, staging: _Staging, entries: names.Listed, archive: str) -> None:
    """Each tagged model reads as a model (its config parses, its file names stay inside its directory), as a
    pull checks it: one that ``list`` or ``run`` could not read is refused before anything is committed."""
    for ref_name, desc in entries:
        if ref_name is None or desc.media_type not in mt.MANIFESTS:
            continue  # an index (a multi-platform image) is checked when one of its models is used
        raw = _read_document(store, staging, desc.digest, archive)
        manifest = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
        if not isinstance(manifest, descriptor.Manifest):
            continue
        config = _read_document(store, staging, manifest.config.digest, archive, what="config")
        try:
            artifact.from_manifest(manifest, config)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{archive}: {ref_name}: {exc.message}",
                hint=f"{exc.hint or 'the archive is corrupt'}; nothing was loaded",
            ) from None


def _documents(store: Layout, staging: _Staging, archive: str) -> list[graph.Node]:
    """The archive's blobs that parse as manifests or indexes."""
    nodes: list[graph.Node] = []
    for digest, size in staging.sizes.items():
        if size > MAX_MANIFEST:
            continue
        with suppress(IntegrityError, OSError):
            data = _read_document(store, staging, digest, archive)
            if data.lstrip()[:1] == b"{":
                nodes.append(graph.node(digest, data))
    return nodes


def _plan(
    store: Layout, staging: _Staging, entries: names.Listed, archive: str, documents: list[graph.Node]
) -> tuple[set[Digest], int]:
    """Every blob to keep (what the tagged entries reach, plus referrers of it); checks presence and sizes.

    Returns (digests to keep, number of referrer manifests)."""

    def size_of(digest: Digest) -> int | None:
        if digest in staging.sizes:
            return staging.sizes[digest]
        try:
            st = store.blob_path(digest).stat()
        except FileNotFoundError:
            return None
        return st.st_size

    def check(desc: Descriptor, parent: str) -> None:
        size = size_of(desc.digest)
        if size is None:
            raise IntegrityError(
                f"{archive} is missing blob {desc.digest} that {parent} needs",
                hint="the archive is incomplete; save it again; nothing was loaded",
            )
        if size != desc.size:
            raise IntegrityError(
                f"{archive}: blob {desc.digest} is {size} bytes, {parent} says {desc.size}",
                hint="the archive is corrupt; nothing was loaded",
            )

    def children(desc: Descriptor) -> Sequence[Descriptor]:
        if desc.media_type not in graph.DOCUMENTS:
            return ()
        data = _read_document(store, staging, desc.digest, archive)
        below = graph.children(descriptor.parse(data, desc.media_type))
        for child in below:
            check(child, f"manifest {desc.digest}")
        return below

    by_subject = graph.attached(documents)  # referrers (model cards): attached to what the tagged entries reach

    roots: list[Descriptor] = []
    for ref_name, desc in entries:
        if ref_name is not None:  # untagged entries load only as referrers of a tagged model
            check(desc, f"index.json entry {ref_name}")
            roots.append(desc)
    keep: set[Digest] = set()
    referrers = 0
    for step in graph.walk(roots, children, lambda d: by_subject.get(d, ()), where=f"{archive}: "):
        keep.add(step.desc.digest)
        referrers += step.referrer
    return keep, referrers
