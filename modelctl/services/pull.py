"""pull: resolve a reference on its source, download and verify every file, then tag it in the local store.

Order matters for consistency: blobs first (each verified before it enters ``blobs/``), then the config and
manifest blobs, then the tag in ``index.json``. A pull killed at any point leaves the store valid: at worst
some unreferenced (but correct) blobs and a resumable partial under ``ingest/``. Ctrl-C and SIGTERM stop the
download threads at once (see :mod:`modelctl.services.parallel`) and end in ``Interrupted`` saying what is kept;
a disk that fills up on the way ends in ``NoSpace`` saying how much more room the rest of the pull needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modelctl import atomic, sources, transfer
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import INTERRUPTS, Interrupted, ModelctlError, NoSpace, NotFound, UnsupportedFormat
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.reference import Reference
from modelctl.store import Layout
from modelctl.store import models as local
from modelctl.store import verify as store_verify

if TYPE_CHECKING:
    from modelctl import artifact

# The fit check, the manifest writer of plain-file sources and the download threads are imported where they are
# used: a pull of a model that is present needs none of them (issue 16: no fixed overheads).

MAX_PARALLEL_BLOBS = 3


class Reporter(Protocol):
    """What the pull tells its caller; the CLI renders it (bars on a TTY, plain lines otherwise)."""

    def resolved(self, ref: Reference, model: artifact.Model, to_fetch: int) -> None: ...
    def progress(self, event: transfer.Progress) -> None: ...
    def warning(self, message: str) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PullResult:
    reference: str
    digest: Digest
    size: int
    files: tuple[Path, ...]
    fetched: int
    """Bytes of blob content that were missing locally and had to be fetched (0 when up to date)."""

    def to_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "size": self.size,
            "files": [str(p) for p in self.files],
        }


def pull(
    config: Config, refs: Sequence[Reference], reporter: Reporter, *, verify: bool = False, use_local: bool = False
) -> list[PullResult]:
    """Pull ``refs``. Layers already present are checked by size (a ``stat``), and with ``verify`` by content too;
    a damaged one is fetched again. ``use_local``: a tag the store holds complete is used as it is, without asking
    its registry (``pull --output``: no network when the model is present)."""
    store = local.layout(config)
    store.ensure()
    if use_local:
        refs = [_pinned(store, ref) for ref in refs]
    with sources.Sources(config) as found, store.batch():  # one index write for all the references' tags
        return [_pull_one(config, store, found.for_reference(ref), reporter, verify) for ref in refs]


def _pinned(store: Layout, ref: Reference) -> Reference:
    """``ref`` pinned to the manifest the store holds under its name: a digest-pinned reference whose model is
    complete in the store resolves there. Hugging Face references keep their own offline rule."""
    if ref.digest or ref.is_hugging_face:
        return ref
    held = [desc.digest for name, desc in store.entries() if name == str(ref)]
    return ref.with_digest(held[0]) if held else ref


def _pull_one(config: Config, store: Layout, source: sources.Source, reporter: Reporter, verify: bool) -> PullResult:
    """One reference. An interrupt ends it in Interrupted (what is kept); a full disk in NoSpace (how much more)."""
    planned: list[transfer.Plan] = []
    try:
        return _fetch_and_tag(config, store, source, reporter, verify, planned)
    except INTERRUPTS as exc:
        raise Interrupted.by(exc, _kept_line(config, store, planned)) from None
    except NoSpace as exc:
        if not exc.directory or not planned:  # the check before the download: it said it all
            raise
        raise _no_room(config, store, source, planned[0], Path(exc.directory)) from exc
    except OSError as exc:
        if not atomic.disk_full(exc) or not planned:
            raise
        where = Path(exc.filename).parent if isinstance(exc.filename, str) else config.home
        raise _no_room(config, store, source, planned[0], where) from exc


def _kept_line(config: Config, store: Layout, planned: list[transfer.Plan]) -> str:
    if not planned:
        return "interrupted before the download started; run the same command to pull"
    work = planned[0]
    if not work.bytes_total:
        return "interrupted: nothing was left to download; run the same command to finish the pull"
    kept = transfer.kept(work, store, ingest_dir=config.ingest_dir)
    return f"interrupted: {kept} of {work.bytes_total} bytes kept; run the same command to resume"


def _no_room(config: Config, store: Layout, source: sources.Source, work: transfer.Plan, where: Path) -> NoSpace:
    need = transfer.room_needed(work.missing, store, ingest_dir=config.ingest_dir)
    return atomic.no_space(
        where,
        need,
        f"the pull of {source.reference.short}",
        hint=f"{atomic.SPACE_HINT}; what was downloaded is kept: run the same command to resume",
    )


def _fetch_and_tag(
    config: Config,
    store: Layout,
    source: sources.Source,
    reporter: Reporter,
    verify: bool,
    planned: list[transfer.Plan],
) -> PullResult:
    """The pull of one reference; ``planned`` receives the download's plan as soon as there is one."""
    resolved = source.resolve(store)
    if resolved.warning:
        reporter.warning(resolved.warning)
    if not resolved.model.gguf:  # nothing path, run or fit could use: refused before a byte is fetched
        raise UnsupportedFormat(
            f"{source.reference.short} has no GGUF layer: there is nothing to run in it",
            hint="modelctl pulls and runs GGUF models only; nothing was downloaded or tagged",
        )
    damaged = store_verify.recheck(store, resolved.layers, reporter.warning, full=verify, progress=hashing(reporter))
    if damaged and resolved.local:
        resolved = source.resolve(store)  # a damaged layer was removed: the local copy no longer stands alone
    fetched = 0
    if resolved.local:
        planned.append(transfer.Plan(missing=(), bytes_total=0, bytes_to_fetch=0, bytes_to_allocate=0))
    else:
        work = transfer.plan(list(_unique(resolved.layers)), store, ingest_dir=config.ingest_dir)
        planned.append(work)
        reporter.resolved(resolved.reference, resolved.model, work.bytes_to_fetch)
        if work.missing:
            _warn_if_too_big(config, source, resolved, reporter)
        transfer.check_space(work, config.home)
        if work.missing:
            store.flush()  # the tags of the models pulled so far are written before a long download
            _download_all(config, source, store, work.missing, reporter)
        fetched = work.bytes_to_fetch
    desc = _store_manifest(store, resolved)
    for layer in resolved.layers:  # a concurrent rm may have removed a shared blob meanwhile
        if not store.has_blob(layer.digest):
            raise NotFound(
                f"blob {layer.digest} vanished during the pull", hint=f"run: modelctl pull {source.reference}"
            )
    # the tags are written when the pull's batch ends, each checked complete under the store's lock then
    for name in resolved.tags:
        store.tag(name, desc)
    entry = local.load(store, resolved.tags[0], desc)
    files = local.materialise(config, store, entry)
    return PullResult(
        reference=entry.name, digest=desc.digest, size=_size(entry.manifest), files=tuple(files), fetched=fetched
    )


def _store_manifest(store: Layout, resolved: sources.Resolved) -> Descriptor:
    """The manifest's descriptor, its blobs written: the source's own, or (a source of plain files, the Hub) the
    Docker model-spec manifest ``modelctl package`` writes, its config read from the first GGUF file."""
    manifest = resolved.manifest
    if manifest is None:
        from modelctl.services import package

        first = store.blob_path(resolved.layers[0].digest)
        desc, _ = package.write_model(
            store, resolved.layers, first_gguf=first, context_size=None, created=resolved.created
        )
        return desc
    if not resolved.local:
        store.write_blob(resolved.config, manifest.config.digest)
        store.write_blob(manifest.raw, manifest.digest)
    return Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))


def _size(manifest: Manifest) -> int:
    return sum(blob.size for blob in manifest.blobs) + len(manifest.raw)


def _warn_if_too_big(config: Config, source: sources.Source, resolved: sources.Resolved, reporter: Reporter) -> None:
    """The fit check, before the download, from the GGUF headers alone. It warns and never refuses: the model
    may be meant for another machine. A header it cannot read is not this command's problem."""
    if not resolved.model.gguf:
        return
    from modelctl.fit.settings import RunSettings
    from modelctl.sources import headers

    try:
        report = headers.fit(source, resolved, RunSettings(cpu_buffers=config.cpu_buffers))
    except ModelctlError:
        return
    if report.verdict == "does_not_fit":
        reporter.warning(f"{source.reference.short} will not fit in this machine's memory: {report.suggestion}")


def fetch_blob(
    config: Config,
    desc: Descriptor,
    source: transfer.RangeSource,
    store: Layout,
    reporter: Reporter,
    stop: threading.Event | None = None,
) -> Path:
    """One blob through the download engine with the configured parts, timeouts and retries (registry layers and
    Hugging Face files alike): parallel Range parts, resume, one download per blob across processes, verified.
    Setting ``stop`` ends it early with ``transfer.Stopped``, its partial saved."""
    from modelctl.transfer.download import download

    return download(
        desc,
        source,
        store,
        ingest_dir=config.ingest_dir,
        parts=config.parts,
        fixed=config.fixed_parts,
        min_part_size=config.min_part_size,
        retries=config.retries,
        progress=reporter.progress,
        stop=stop,
    )


def _download_all(
    config: Config, source: sources.Source, store: Layout, missing: Sequence[Descriptor], reporter: Reporter
) -> None:
    from modelctl.services import parallel

    stop = threading.Event()  # set by an interrupt: every blob's download stops and saves its partial

    def one(desc: Descriptor) -> Path:
        return fetch_blob(config, desc, sources.BlobRanges(source, desc.digest), store, reporter, stop)

    parallel.each(one, missing, workers=MAX_PARALLEL_BLOBS, stop=stop)


def hashing(reporter: Reporter) -> store_verify.Progress:
    """The progress of a re-hash of stored blobs (``pull --verify``, ``verify``), shown like a download's."""

    def report(digest: Digest, total: int, done: int) -> None:
        reporter.progress(transfer.Progress(digest=digest, total=total, done=done, fetched_this_run=done))

    return report


def _unique(layers: Sequence[Descriptor]) -> Iterator[Descriptor]:
    seen: set[str] = set()
    for layer in layers:
        if layer.digest not in seen:
            seen.add(layer.digest)
            yield layer
