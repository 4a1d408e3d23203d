"""The Hugging Face source: ``hf.co/<org>/<repo>[:QUANT]``.

The Hub lists a repository's files with their LFS sha256 (:mod:`modelctl.sources.hub`, one API request honouring
HF_ENDPOINT and HF_TOKEN); ``hf_files`` picks the GGUF shard(s) and mmproj for the quantisation tag. A reference
resolves to those files as layers, with no manifest: the pull writes the same Docker model-spec v0.1 artifact
``modelctl package`` writes, tagged ``hf.co/<org>/<repo>:<QUANT>`` (and ``:latest`` when no tag was given), so every
other command treats it like any model. Its creation time is the repository's last modification, so a pull of an
unchanged repository reproduces the same manifest digest; when the store holds exactly that model already, its
manifest is used as it is, and a pull of a present model reads no file at all.

Files are read by ranges from their resolve URLs, so the files the store lacks go through the registry pull's
engine (``modelctl.transfer``): parallel Range parts, resume after a kill, one download per file across processes,
the sha256 checked as the bytes arrive against the Hub's. huggingface_hub's ``http_get`` streamed one connection
through 10 MiB re-chunking and needed a second read to hash (8.7 s for a 1 GiB file curl fetched in 1.7 s,
measured with benchmarks/hf_pull.py), and importing huggingface_hub for the listing took ~0.6 s of every pull.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelctl import artifact, hf_files
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import AuthError, IntegrityError, NotFound, RegistryError, UsageError
from modelctl.hf_files import HubFile, Selection
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.reference import HUGGING_FACE, Reference
from modelctl.sources import hub
from modelctl.sources.hub import Listing
from modelctl.sources.source import Resolved, complete
from modelctl.store import Layout

if TYPE_CHECKING:
    import httpx

    from modelctl.oci.transport import BlobReader


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    listing: Listing
    selection: Selection
    tag: str
    """The tag the model is stored under: the quantisation, or ``latest`` for an unlabelled model."""


# --- the Hub ---------------------------------------------------------------------------------------------------


def _check_ref(ref: Reference) -> None:
    if ref.digest:
        raise UsageError(
            f"{ref}: Hugging Face references take a quantisation tag, not a digest",
            hint="use hf.co/<org>/<repo>[:QUANT]; pull once, then pin the local digest with --lock",
        )


def plan(config: Config, client: httpx.Client, ref: Reference) -> Plan:
    _check_ref(ref)
    found = hub.listing(config, client, ref)
    selection = hf_files.choose(found.files, ref.tag, repo=f"{HUGGING_FACE}/{ref.repository}")
    for f in selection.files:
        if not f.sha256 or f.size is None:
            raise IntegrityError(
                f"the Hub lists no sha256 for {f.path} in {ref.repository}",
                hint="modelctl verifies every file and cannot verify this one; report it to the repository owner",
            )
        try:  # it names files under ingest/ and blobs/: never trust its shape
            Digest.sha256(f.sha256.lower())
        except IntegrityError:
            raise IntegrityError(
                f"the Hub lists a malformed sha256 for {f.path} in {ref.repository}",
                hint="check that HF_ENDPOINT points at a Hugging Face Hub",
            ) from None
    return Plan(listing=found, selection=selection, tag=selection.quant or "latest")


# --- the source ------------------------------------------------------------------------------------------------


class HubSource:
    """``ref`` on the Hub. ``http()`` gives the HTTP client the file reads share (built on first use)."""

    def __init__(self, config: Config, ref: Reference, http: Callable[[], httpx.Client]) -> None:
        self._config = config
        self._ref = ref
        self._http = http
        self._lock = threading.Lock()
        self._plan: Plan | None = None

    @property
    def reference(self) -> Reference:
        return self._ref

    def resolve(self, store: Layout | None = None) -> Resolved:
        """The files the quantisation tag picks, as the Hub lists them (one API call; no file is read). With the Hub
        unreachable, a model already tagged in ``store`` is used."""
        try:
            todo = self._planned()
        except RegistryError as exc:
            present = self._present(store) if store is not None else None
            if present is None:
                raise
            manifest, config_bytes = present
            return Resolved(
                reference=self._ref,
                tags=(str(self._ref),),
                layers=manifest.layers,
                model=artifact.from_manifest(manifest, config_bytes),
                manifest=manifest,
                config=config_bytes,
                local=True,
                warning=f"{exc.message}; using the local copy of {self._ref}",
            )
        resolved = _resolved(self._ref, todo)
        return (_held(store, resolved) if store is not None else None) or resolved

    def open_range(self, digest: Digest, start: int, end: int | None) -> AbstractContextManager[BlobReader]:
        todo = self._planned()
        by_digest = {_digest(f): f.path for f in todo.selection.files}
        if digest not in by_digest:
            raise NotFound(f"{digest} is not a file of {self._ref}", hint="resolve the reference first")
        return self._file(todo.listing, by_digest[digest]).open_range(start, end)

    def tags(self) -> list[str]:
        _check_ref(self._ref)
        return hf_files.available(hub.listing(self._config, self._http(), self._ref).files)

    def card(self) -> tuple[bytes, str] | None:
        return None  # a repository's README is not a modelctl card: the bundled card stands in

    def _planned(self) -> Plan:
        with self._lock:
            if self._plan is None:
                self._plan = plan(self._config, self._http(), self._ref)
            return self._plan

    def _file(self, found: Listing, path: str) -> _HubFile:
        url = hub.resolve_url(self._config, found.repo_id, found.revision, path)
        return _HubFile(
            self._http(), url, hub.auth_headers(self._config), path, f"{HUGGING_FACE}/{self._ref.repository}"
        )

    def _present(self, store: Layout) -> tuple[Manifest, bytes] | None:
        if not store.index_path.is_file():
            return None
        desc = store.resolve(str(self._ref))
        if desc is None:
            return None
        raw = store.read_blob(desc.digest, max_size=4 << 20)
        manifest = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
        if not isinstance(manifest, Manifest) or not complete(store, manifest):
            return None
        return manifest, store.read_blob(manifest.config.digest)


def _held(store: Layout, resolved: Resolved) -> Resolved | None:
    """``resolved`` as the store holds it already: its tag names a complete manifest of exactly these layers, written
    for this revision's creation time (what the pull would write again). Then the pull reads no file: the manifest's
    config, which comes from the first GGUF's header, is not built again."""
    if not store.index_path.is_file():
        return None
    desc = store.resolve(resolved.tags[0])
    if desc is None:
        return None
    raw = store.read_blob(desc.digest, max_size=4 << 20)
    manifest = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
    if not isinstance(manifest, Manifest) or manifest.layers != resolved.layers or not complete(store, manifest):
        return None
    config = store.read_blob(manifest.config.digest)
    try:
        created = json.loads(config)["descriptor"]["created"]
    except (ValueError, KeyError, TypeError):
        return None
    if created != resolved.created:
        return None
    return replace(resolved, manifest=manifest, config=config, local=True)


def _resolved(ref: Reference, todo: Plan) -> Resolved:
    sel = todo.selection
    layers: list[Descriptor] = []
    for f in sel.files:
        media_type = mt.DOCKER_MMPROJ if f is sel.mmproj else mt.DOCKER_GGUF
        name = f.path.rsplit("/", 1)[-1]
        assert f.size is not None
        layers.append(
            Descriptor(media_type=media_type, digest=_digest(f), size=f.size, annotations={mt.FILEPATH: name})
        )
    by_digest = {d.digest: d for d in layers}
    stored = Reference(HUGGING_FACE, ref.repository, todo.tag, None)
    tags = [str(stored)]
    if ref.tag != todo.tag and ref.tag is not None and hf_files.is_default(ref.tag):
        tags.append(str(ref))  # hf.co/org/repo (= :latest) finds the model offline next time
    model = artifact.Model(
        format="docker",
        manifest_digest="",
        gguf=tuple(by_digest[_digest(f)] for f in sel.shards),
        mmproj=by_digest[_digest(sel.mmproj)] if sel.mmproj else None,
        size=sel.size,
    )
    created = _rfc3339(todo.listing.last_modified)
    return Resolved(
        reference=stored,
        tags=tuple(tags),
        layers=tuple(layers),
        model=model,
        created=created,
        details=_details(ref, stored, todo, created),
    )


def _details(ref: Reference, stored: Reference, todo: Plan, created: str) -> dict[str, Any]:
    """What a pull would fetch: files, sizes and sha256 as the Hub lists them (``inspect --remote``)."""
    sel = todo.selection

    def row(f: HubFile, kind: str) -> dict[str, Any]:
        return {"path": f.path, "kind": kind, "size": f.size, "digest": _digest(f)}

    files = [row(f, "gguf") for f in sel.shards] + ([row(sel.mmproj, "mmproj")] if sel.mmproj else [])
    return {
        "reference": str(stored),
        "source": "huggingface",
        "repository": ref.repository,
        "revision": todo.listing.revision,
        "format": "gguf",
        "quantization": sel.quant,
        "size": sel.size,
        "created": created,
        "gguf": [_digest(f) for f in sel.shards],
        "files": files,
        "available": hf_files.available(todo.listing.files),
    }


def _digest(f: HubFile) -> Digest:
    """The digest of a file whose sha256 ``plan`` checked: the Hub lists bare lowercase-or-not hex."""
    assert f.sha256 is not None
    return Digest.sha256(f.sha256.lower())


def _rfc3339(when: datetime | None) -> str:
    if when is None:
        return "1970-01-01T00:00:00Z"
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _HubFile:
    """One file's resolve URL as the engine's ``RangeSource``: the Hub redirects to its CDN, and the client's
    redirect handling keeps ``Range`` and drops the token when the host changes."""

    client: httpx.Client
    url: str
    headers: Mapping[str, str]
    path: str
    repo: str

    @contextmanager
    def open_range(self, start: int, end: int | None) -> Iterator[BlobReader]:
        from modelctl.oci import transport

        wanted = {**self.headers, "Range": f"bytes={start}-{'' if end is None else end}"}
        response = transport.send(self.client, self.client.build_request("GET", self.url, headers=wanted))
        try:
            status = response.status_code
            if status in (401, 403):
                raise AuthError(
                    f"the Hub refused access to {self.repo} (HTTP {status})",
                    hint="set HF_TOKEN to a token that can read it",
                )
            if status not in (200, 206):
                what = f"{self.path} of {self.repo}"
                raise transport.error_for(response, what=what, registry=response.url.netloc.decode("ascii"))
            yield transport.BlobReader(response, start=start, end=end)
        finally:
            response.close()
