"""pull: resolve a reference on its registry, download and verify every blob, then tag it in the local store.

Order matters for consistency: blobs first (each verified before it enters ``blobs/``), then the config and
manifest blobs, then the tag in ``index.json``. A pull killed at any point leaves the store valid: at worst
some unreferenced (but correct) blobs and a resumable partial under ``ingest/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modelctl import artifact, transfer
from modelctl.config import Config
from modelctl.errors import NotFound, UnsupportedFormat
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Index, Manifest
from modelctl.reference import Reference
from modelctl.services import local
from modelctl.store import Layout

if TYPE_CHECKING:
    from modelctl.oci.client import RegistryClient

MAX_PARALLEL_BLOBS = 3


class Reporter(Protocol):
    """What the pull tells its caller; the CLI renders it (bars on a TTY, plain lines otherwise)."""

    def resolved(self, ref: Reference, model: artifact.Model, to_fetch: int) -> None: ...
    def progress(self, event: transfer.Progress) -> None: ...
    def warning(self, message: str) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class PullResult:
    reference: str
    digest: str
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


@dataclass(frozen=True, slots=True)
class _BlobRanges:
    """Adapts the registry client to the engine's RangeSource seam."""

    client: RegistryClient
    ref: Reference
    digest: str

    def open_range(self, start: int, end: int | None) -> AbstractContextManager[transfer.RangeReader]:
        return self.client.open_blob(self.ref, self.digest, start=start, end=end)


def pull(config: Config, refs: Sequence[Reference], reporter: Reporter) -> list[PullResult]:
    from modelctl.oci.client import RegistryClient

    store = local.layout(config)
    store.ensure()
    with RegistryClient(config) as client:
        return [
            _pull_hf(config, store, ref, reporter)
            if ref.is_hugging_face
            else _pull_one(config, client, store, ref, reporter)
            for ref in refs
        ]


def _pull_hf(config: Config, store: Layout, ref: Reference, reporter: Reporter) -> PullResult:
    from modelctl.services import huggingface

    return huggingface.pull_one(config, store, ref, reporter)


def resolve_remote(
    client: RegistryClient, ref: Reference, store: Layout | None = None
) -> tuple[Manifest, bytes, artifact.Model]:
    """Fetch the manifest (choosing a model manifest inside an index) and config; no blob download.

    A config already in ``store`` is read from there (it was verified when it entered), not fetched again.
    """
    doc, _ = client.get_manifest(ref)
    if isinstance(doc, Index):
        doc = _pick_from_index(client, ref, doc)
    if store is not None and store.has_blob(doc.config.digest, doc.config.size):
        config_bytes = store.read_blob(doc.config.digest)
    else:
        config_bytes = client.get_blob(ref, doc.config.digest)
    return doc, config_bytes, artifact.from_manifest(doc, config_bytes)


def _pull_one(config: Config, client: RegistryClient, store: Layout, ref: Reference, reporter: Reporter) -> PullResult:
    if ref.digest and (present := _present_by_digest(store, ref)) is not None:
        manifest = present
        model = artifact.from_manifest(manifest, store.read_blob(manifest.config.digest))
        fetched = 0
    else:
        manifest, config_bytes, model = resolve_remote(client, ref, store)
        blobs = list(_unique(manifest.layers))
        work = transfer.plan(blobs, store, ingest_dir=config.ingest_dir)
        reporter.resolved(ref, model, work.bytes_to_fetch)
        if work.missing:
            _warn_if_too_big(client, ref, model, reporter)
        transfer.check_space(work, config.home)
        _download_all(config, client, store, ref, work.missing, reporter)
        store.write_blob(config_bytes, manifest.config.digest)
        store.write_blob(manifest.raw, manifest.digest)
        fetched = work.bytes_to_fetch
    desc = Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))
    # name:tag@digest is stored as name:tag (the content was verified to be that digest); name@digest as is.
    name = str(Reference(ref.registry, ref.repository, ref.tag, None)) if ref.tag else str(ref)
    with store.locked():
        for layer in manifest.layers:  # a concurrent rm may have removed a shared blob meanwhile
            if not store.has_blob(layer.digest):
                raise NotFound(f"blob {layer.digest} vanished during the pull", hint=f"run: modelctl pull {ref}")
        store.tag(name, desc)
    entry = local.LocalModel(name=name, desc=desc, manifest=manifest, model=model)
    files = local.materialise(config, store, entry)
    size = sum(layer.size for layer in manifest.layers) + manifest.config.size + len(manifest.raw)
    return PullResult(reference=name, digest=manifest.digest, size=size, files=tuple(files), fetched=fetched)


def _warn_if_too_big(client: RegistryClient, ref: Reference, model: artifact.Model, reporter: Reporter) -> None:
    """The fit check, before the download, from the GGUF headers alone. It warns and never refuses: the model
    may be meant for another machine. A header it cannot read is not this command's problem."""
    from modelctl.errors import ModelctlError
    from modelctl.fit.settings import RunSettings
    from modelctl.services.fit_ref import remote_report

    if not model.gguf:
        return
    try:
        report = remote_report(client, ref, model, RunSettings())
    except ModelctlError:
        return
    if report.verdict == "does_not_fit":
        reporter.warning(f"{ref.short} will not fit in this machine's memory: {report.suggestion}")


def fetch_blob(
    config: Config, desc: Descriptor, source: transfer.RangeSource, store: Layout, reporter: Reporter
) -> Path:
    """One blob through the download engine with the configured parts, timeouts and retries (registry layers and
    Hugging Face files alike): parallel Range parts, resume, one download per blob across processes, verified."""
    return transfer.download(
        desc,
        source,
        store,
        ingest_dir=config.ingest_dir,
        parts=config.parts,
        min_part_size=config.min_part_size,
        stall_timeout=config.stall_timeout,
        retries=config.retries,
        progress=reporter.progress,
    )


def _download_all(
    config: Config,
    client: RegistryClient,
    store: Layout,
    ref: Reference,
    missing: Sequence[Descriptor],
    reporter: Reporter,
) -> None:
    def one(desc: Descriptor) -> Path:
        return fetch_blob(config, desc, _BlobRanges(client, ref, desc.digest), store, reporter)

    if not missing:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_BLOBS, len(missing))) as pool:
        futures = [pool.submit(one, desc) for desc in missing]
        error: BaseException | None = None
        for future in futures:
            try:
                future.result()
            except BaseException as exc:  # keep the first failure; the others finish or fail on their own
                error = error or exc
        if error is not None:
            raise error


def _present_by_digest(store: Layout, ref: Reference) -> Manifest | None:
    """A digest-pinned model already complete locally needs no network at all."""
    assert ref.digest is not None
    if not store.has_blob(ref.digest):
        return None
    from modelctl.oci import descriptor

    doc = descriptor.parse(store.read_blob(ref.digest, max_size=4 << 20))
    if not isinstance(doc, Manifest) or not store.has_blob(doc.config.digest):
        return None
    if all(store.has_blob(layer.digest, layer.size) for layer in doc.layers):
        return doc
    return None


def _pick_from_index(client: RegistryClient, ref: Reference, index: Index) -> Manifest:
    for entry in index.manifests:
        if entry.media_type not in mt.MANIFESTS:
            continue
        doc, _ = client.get_manifest(ref.with_digest(entry.digest))
        if isinstance(doc, Manifest):
            try:
                artifact.classify(doc)
            except UnsupportedFormat:
                continue
            return doc
    raise UnsupportedFormat(
        f"unsupported model format {index.media_type}: no model manifest in the index of {ref}",
        hint="this looks like a container image, not a model",
    )


def _unique(layers: Sequence[Descriptor]) -> Iterator[Descriptor]:
    seen: set[str] = set()
    for layer in layers:
        if layer.digest not in seen:
            seen.add(layer.digest)
            yield layer
