"""Hugging Face GGUF repositories: ``hf.co/<org>/<repo>[:QUANT]``, through the ``huggingface_hub`` library.

The Hub lists a repository's files with their LFS sha256 (the model info with files metadata, through
huggingface_hub, honouring HF_ENDPOINT and HF_TOKEN); ``hf_files`` picks the GGUF shard(s) and mmproj for the
quantisation tag. The files the store lacks are fetched from the resolve URLs by the registry pull's engine
(``modelctl.transfer``): parallel Range parts, resume after a kill, one download per file across processes, the
sha256 checked as the bytes arrive against the Hub's. huggingface_hub's ``http_get`` streamed one connection through
10 MiB re-chunking and needed a second read to hash (8.7 s for a 1 GiB file curl fetched in 1.7 s, measured with
benchmarks/hf_pull.py). The result is the same Docker model-spec v0.1 artifact ``modelctl package`` writes,
tagged ``hf.co/<org>/<repo>:<QUANT>`` (and ``:latest`` when no tag was given), so every other command treats it like
any model. Its creation time is the repository's last modification, so a
pull of an unchanged repository reproduces the same manifest digest.

``huggingface_hub`` is imported lazily: it is heavy, and only these commands need it.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelctl import artifact, hf_files
from modelctl.config import Config
from modelctl.errors import (
    AuthError,
    IntegrityError,
    ModelctlError,
    NoSpace,
    NotFound,
    RegistryError,
    UsageError,
)
from modelctl.hf_files import HubFile, Selection
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.reference import HUGGING_FACE, Reference
from modelctl.services import local, package
from modelctl.services.ranged import take_window
from modelctl.store import Layout

if TYPE_CHECKING:
    import httpx

    from modelctl.fit.settings import RunSettings
    from modelctl.oci.transport import BlobReader
    from modelctl.services.fit import FitReport
    from modelctl.services.pull import PullResult, Reporter

DEFAULT_ENDPOINT = "https://huggingface.co"
_NETWORK_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "TimeoutException",
        "TransportError",
        "NetworkError",
        "RemoteProtocolError",
        "ReadError",
        "WriteError",
        "PoolTimeout",
        "ConnectionError",
        "Timeout",
        "ProxyError",
    }
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Listing:
    """What the Hub says about a repository at its current revision."""

    repo_id: str
    revision: str
    last_modified: datetime | None
    files: tuple[HubFile, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    listing: Listing
    selection: Selection
    tag: str
    """The tag the model is stored under: the quantisation, or ``latest`` for an unlabelled model."""


# --- the Hub ---------------------------------------------------------------------------------------------------


def endpoint(config: Config) -> str:
    return (config.hf_endpoint or DEFAULT_ENDPOINT).rstrip("/")


def _token(config: Config) -> str | None:
    return config.hf_token


def _check_ref(ref: Reference) -> None:
    if not ref.is_hugging_face:
        raise UsageError(f"{ref} is not a Hugging Face reference", hint="use hf.co/<org>/<repo>[:QUANT]")
    if ref.digest:
        raise UsageError(
            f"{ref}: Hugging Face references take a quantisation tag, not a digest",
            hint="use hf.co/<org>/<repo>[:QUANT]; pull once, then pin the local digest with --lock",
        )


def listing(config: Config, ref: Reference) -> Listing:
    """The repository's files with sizes and LFS sha256 (one API call; no file is read)."""
    _check_ref(ref)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint(config), token=_token(config))
    with hub_errors(config, ref):
        info = api.model_info(ref.repository, files_metadata=True)
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else None
        files.append(
            HubFile(path=sibling.rfilename, size=sibling.size if sibling.size is not None else size, sha256=sha)
        )
    if not info.sha:
        raise RegistryError(
            f"{endpoint(config)} gave no revision for {ref.repository}",
            hint="check that HF_ENDPOINT points at a Hugging Face Hub",
        )
    return Listing(repo_id=ref.repository, revision=info.sha, last_modified=info.last_modified, files=tuple(files))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def plan(config: Config, ref: Reference) -> Plan:
    found = listing(config, ref)
    selection = hf_files.choose(found.files, ref.tag, repo=f"{HUGGING_FACE}/{ref.repository}")
    for f in selection.files:
        if not f.sha256 or f.size is None:
            raise IntegrityError(
                f"the Hub lists no sha256 for {f.path} in {ref.repository}",
                hint="modelctl verifies every file and cannot verify this one; report it to the repository owner",
            )
        if not _SHA256.fullmatch(f.sha256.lower()):  # it names files under ingest/ and blobs/: never trust its shape
            raise IntegrityError(
                f"the Hub lists a malformed sha256 for {f.path} in {ref.repository}",
                hint="check that HF_ENDPOINT points at a Hugging Face Hub",
            )
    return Plan(listing=found, selection=selection, tag=selection.quant or "latest")


@contextmanager
def hub_errors(config: Config, ref: Reference) -> Iterator[None]:
    """Turn huggingface_hub's and the HTTP stack's exceptions into modelctl's typed errors (never echoing a token)."""
    try:
        yield
    except ModelctlError:
        raise
    except Exception as exc:
        mapped = _translate(exc, config, ref)
        if mapped is None:
            raise
        raise mapped from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _translate(exc: BaseException, config: Config, ref: Reference) -> ModelctlError | None:
    from huggingface_hub import errors as hf

    repo = f"{HUGGING_FACE}/{ref.repository}"
    token_hint = "check that HF_TOKEN can read it" if config.hf_token else "set HF_TOKEN to a token that can read it"
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, hf.GatedRepoError):
            return AuthError(f"{repo} is a gated repository", hint=f"accept its terms on the Hub and {token_hint}")
        if isinstance(e, hf.RevisionNotFoundError):
            return NotFound(f"{repo}: revision not found", hint="check the repository on the Hub")
        if isinstance(e, hf.EntryNotFoundError) and not isinstance(e, hf.LocalEntryNotFoundError):
            return NotFound(f"{repo}: a listed file is missing on the Hub", hint="pull again; the repository changed")
        if isinstance(e, hf.HfHubHTTPError) or _status(e) is not None:
            status = _status(e)
            if status in (401, 403):
                return AuthError(
                    f"the Hub refused access to {repo} (HTTP {status})",
                    hint=f"it is private or gated (or does not exist): {token_hint}",
                )
            if status == 404 or isinstance(e, hf.RepositoryNotFoundError):
                return NotFound(f"{repo} was not found on {endpoint(config)}", hint="check the name on the Hub")
            return RegistryError(
                f"the Hub answered HTTP {status} for {repo}",
                status=status,
                temporary=status is None or status >= 500 or status == 429,
                hint="try again later",
            )
    for e in chain:
        if isinstance(e, hf.FileMetadataError):
            return RegistryError(
                f"{endpoint(config)} does not answer like a Hugging Face Hub",
                hint="check HF_ENDPOINT, the proxy and the network",
            )
    for e in chain:
        if isinstance(e, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled) or (
            type(e).__name__ in _NETWORK_ERRORS or isinstance(e, ConnectionError | TimeoutError)
        ):
            return RegistryError(
                f"cannot reach the Hugging Face Hub at {endpoint(config)}",
                temporary=True,
                hint="check the network, HTTPS_PROXY or HF_ENDPOINT (and that HF_HUB_OFFLINE is not set)",
            )
    return None


# --- pull ------------------------------------------------------------------------------------------------------


def pull_one(config: Config, store: Layout, ref: Reference, reporter: Reporter) -> PullResult:
    """Pull one hf.co reference into the store. With the Hub unreachable, a model already tagged locally is used."""
    _check_ref(ref)
    try:
        todo = plan(config, ref)
    except RegistryError as exc:
        present = _present(config, store, ref)
        if present is None:
            raise
        reporter.warning(f"{exc.message}; using the local copy of {ref}")
        return present
    return _fetch(config, store, ref, todo, reporter)


def _present(config: Config, store: Layout, ref: Reference) -> PullResult | None:
    from modelctl.services.pull import PullResult

    if not (store.root / "index.json").exists() or not local.find(store, str(ref)):
        return None
    entry = local.resolve(store, str(ref))
    if not all(store.has_blob(layer.digest, layer.size) for layer in entry.manifest.layers):
        return None
    files = local.materialise(config, store, entry)
    size = sum(x.size for x in entry.manifest.layers) + entry.manifest.config.size + len(entry.manifest.raw)
    return PullResult(reference=entry.name, digest=entry.desc.digest, size=size, files=tuple(files), fetched=0)


def _digest(f: HubFile) -> str:
    assert f.sha256 is not None
    return f"sha256:{f.sha256.lower()}"


def _fetch(config: Config, store: Layout, ref: Reference, todo: Plan, reporter: Reporter) -> PullResult:
    from modelctl.services.pull import PullResult, fetch_blob

    store.ensure()
    selection = todo.selection
    missing = [f for f in selection.files if not store.has_blob(_digest(f), f.size)]
    to_fetch = sum(f.size or 0 for f in missing)
    stored = Reference(HUGGING_FACE, ref.repository, todo.tag, None)
    reporter.resolved(stored, artifact.Model(format="docker", manifest_digest="", size=selection.size), to_fetch)
    if missing:
        _warn_if_too_big(config, ref, todo, reporter)
        free = shutil.disk_usage(config.home).free
        if free < to_fetch:
            raise NoSpace(
                f"{stored} needs {to_fetch} bytes, {free} are free under {config.home}",
                hint="free some space (modelctl prune, modelctl rm) or set MODELCTL_HOME elsewhere",
            )
    layers: list[Descriptor] = []
    with _hub_files(config, ref, todo.listing) as source_for:
        for f in selection.files:
            media_type = mt.DOCKER_MMPROJ if f is selection.mmproj else mt.DOCKER_GGUF
            name = f.path.rsplit("/", 1)[-1]
            assert f.size is not None
            desc = Descriptor(media_type=media_type, digest=_digest(f), size=f.size, annotations={mt.FILEPATH: name})
            if f in missing:  # checked as the bytes arrive against the Hub's LFS sha256 (the digest)
                fetch_blob(config, desc, source_for(f.path), store, reporter)
            layers.append(desc)
    created = _rfc3339(todo.listing.last_modified)
    desc, _ = package.write_model(
        store, layers, first_gguf=store.blob_path(layers[0].digest), context_size=None, created=created
    )
    names = [str(stored)]
    if ref.tag != todo.tag and ref.tag is not None and hf_files.is_default(ref.tag):
        names.append(str(ref))  # hf.co/org/repo (= :latest) finds the model offline next time
    with store.locked():
        for layer in layers:  # a concurrent rm may have removed a shared blob meanwhile
            if not store.has_blob(layer.digest):
                raise NotFound(f"blob {layer.digest} vanished during the pull", hint=f"run: modelctl pull {ref}")
        for name in names:
            store.tag(name, desc)
    entry = local.load(store, names[0], desc)
    files = local.materialise(config, store, entry)
    size = sum(x.size for x in entry.manifest.layers) + entry.manifest.config.size + desc.size
    return PullResult(reference=names[0], digest=desc.digest, size=size, files=tuple(files), fetched=to_fetch)


def _rfc3339(when: datetime | None) -> str:
    if when is None:
        return "1970-01-01T00:00:00Z"
    from datetime import UTC

    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _warn_if_too_big(config: Config, ref: Reference, todo: Plan, reporter: Reporter) -> None:
    """The fit check before the download, from the GGUF headers alone; warns, never refuses."""
    from modelctl.fit.settings import RunSettings

    try:
        report = _fit(config, ref, todo, RunSettings(cpu_buffers=config.cpu_buffers))
    except ModelctlError:
        return
    if report.verdict == "does_not_fit":
        reporter.warning(f"{ref} will not fit in this machine's memory: {report.suggestion}")


# --- remote inspect and fit -----------------------------------------------------------------------------------


def inspect_remote(config: Config, ref: Reference) -> dict[str, Any]:
    """What a pull would fetch: files, sizes and sha256 as the Hub lists them. No file is read."""
    todo = plan(config, ref)
    sel = todo.selection

    def row(f: HubFile, kind: str) -> dict[str, Any]:
        return {"path": f.path, "kind": kind, "size": f.size, "digest": _digest(f)}

    files = [row(f, "gguf") for f in sel.shards] + ([row(sel.mmproj, "mmproj")] if sel.mmproj else [])
    return {
        "reference": str(Reference(HUGGING_FACE, ref.repository, todo.tag, None)),
        "source": "huggingface",
        "repository": ref.repository,
        "revision": todo.listing.revision,
        "format": "gguf",
        "quantization": sel.quant,
        "size": sel.size,
        "created": _rfc3339(todo.listing.last_modified),
        "gguf": [_digest(f) for f in sel.shards],
        "files": files,
        "available": hf_files.available(todo.listing.files),
    }


def fit_remote(config: Config, ref: Reference, settings: RunSettings) -> FitReport:
    """fit before download: Range reads of each shard's GGUF header over the Hub's resolve URL."""
    return _fit(config, ref, plan(config, ref), settings)


def _fit(config: Config, ref: Reference, todo: Plan, settings: RunSettings) -> FitReport:
    from modelctl.services.fit import fit_remote as fit_from_ranges

    shards = todo.selection.shards
    by_digest = {_digest(f): f for f in shards}
    with _ranged(config, ref, todo.listing) as fetch:
        report = fit_from_ranges(
            lambda digest, start, end: fetch(by_digest[digest].path, start, end),
            [(_digest(f), f.size or 0) for f in shards],
            settings,
        )
    name = str(Reference(HUGGING_FACE, ref.repository, todo.tag, None))
    return dataclasses.replace(report, reference=name)


@contextmanager
def _ranged(config: Config, ref: Reference, found: Listing) -> Iterator[Callable[[str, int, int], bytes]]:
    """``fetch(path, start, end_inclusive)``: one Range GET of a file's resolve URL (the fit check's header reads)."""
    with _hub_files(config, ref, found) as source_for:

        def fetch(path: str, start: int, end: int) -> bytes:
            with source_for(path).open_range(start, end) as reader:
                return take_window(reader.iter_chunks(), start - reader.offset, end - start + 1)

        yield fetch


@contextmanager
def _hub_files(config: Config, ref: Reference, found: Listing) -> Iterator[Callable[[str], _HubFile]]:
    """``source_for(path)``: a :class:`_HubFile` for each file of the listed revision, over one HTTP client."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    from modelctl.oci import transport

    headers = build_hf_headers(token=_token(config))
    with transport.build_client(config) as client:

        def source_for(path: str) -> _HubFile:
            url = hf_hub_url(found.repo_id, path, revision=found.revision, endpoint=endpoint(config))
            return _HubFile(client, url, headers, path, f"{HUGGING_FACE}/{ref.repository}")

        yield source_for


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
