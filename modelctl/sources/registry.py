"""The OCI registry source: a reference resolves to a manifest (a model manifest chosen inside an index) and its
config; files are blobs read by ranges; the model card is an OCI referrer of the manifest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from modelctl import artifact
from modelctl.digest import Digest
from modelctl.errors import UnsupportedFormat
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Index, Manifest
from modelctl.reference import Reference
from modelctl.sources.source import Resolved, complete
from modelctl.store import Layout

if TYPE_CHECKING:
    from modelctl.oci.client import RegistryClient
    from modelctl.oci.transport import BlobReader

MAX_MANIFEST = 4 << 20


class RegistrySource:
    """``ref`` on its registry, through the client ``client()`` gives (shared by the sources of one command, built
    on the first request: a model present by digest needs none)."""

    def __init__(self, client: Callable[[], RegistryClient], ref: Reference) -> None:
        self._connect = client
        self._ref = ref

    @property
    def _client(self) -> RegistryClient:
        return self._connect()

    @property
    def reference(self) -> Reference:
        return self._ref

    def resolve(self, store: Layout | None = None) -> Resolved:
        """The manifest and config; no blob download. A digest-pinned model complete in ``store`` needs no network,
        and a config already in ``store`` is read from there (it was verified when it entered)."""
        if store is not None and self._ref.digest and (present := self._present(store)) is not None:
            return self._resolved(present, store.read_blob(present.config.digest), local=True)
        doc, _ = self._client.get_manifest(self._ref)
        if isinstance(doc, Index):
            doc = self._pick_from_index(doc)
        if store is not None and store.has_blob(doc.config.digest, doc.config.size):
            config_bytes = store.read_blob(doc.config.digest)
        else:
            config_bytes = self._client.get_blob(self._ref, doc.config.digest)
        return self._resolved(doc, config_bytes, local=False)

    def open_range(self, digest: Digest, start: int, end: int | None) -> AbstractContextManager[BlobReader]:
        return self._client.open_blob(self._ref, digest, start=start, end=end)

    def tags(self) -> list[str]:
        return self._client.tags(self._ref)

    def card(self) -> tuple[bytes, str] | None:
        from modelctl.cards import MAX_CARD

        desc = self._client.head_manifest(self._ref)
        if desc is None:
            return None
        for referrer in self._client.referrers(self._ref, desc.digest, mt.MODEL_CARD_ARTIFACT):
            manifest, _ = self._client.get_manifest(self._ref.with_digest(referrer.digest))
            if not isinstance(manifest, Manifest):
                continue
            for layer in manifest.layers:
                if layer.media_type == mt.MODEL_CARD_LAYER:
                    return self._client.get_blob(self._ref, layer.digest, max_size=MAX_CARD), referrer.digest
        return None

    def _resolved(self, manifest: Manifest, config_bytes: bytes, *, local: bool) -> Resolved:
        ref = self._ref
        # name:tag@digest is stored as name:tag (the content was verified to be that digest); name@digest as is.
        name = str(Reference(ref.registry, ref.repository, ref.tag, None)) if ref.tag else str(ref)
        model = artifact.from_manifest(manifest, config_bytes)
        if not model.gguf and model.foreign:
            raise _only_foreign(ref, model.foreign)
        return Resolved(
            reference=ref,
            tags=(name,),
            layers=tuple(_unique(manifest)),
            model=model,
            manifest=manifest,
            config=config_bytes,
            local=local,
        )

    def _present(self, store: Layout) -> Manifest | None:
        assert self._ref.digest is not None
        if not store.has_blob(self._ref.digest):
            return None
        raw = store.read_blob(self._ref.digest, max_size=MAX_MANIFEST)
        doc = descriptor.parse(raw, algorithm=self._ref.digest.algorithm)
        return doc if isinstance(doc, Manifest) and complete(store, doc) else None

    def _pick_from_index(self, index: Index) -> Manifest:
        for entry in index.manifests:
            if entry.media_type not in mt.MANIFESTS:
                continue
            doc, _ = self._client.get_manifest(self._ref.with_digest(entry.digest))
            if isinstance(doc, Manifest):
                try:
                    artifact.classify(doc)
                except UnsupportedFormat:
                    continue
                return doc
        raise UnsupportedFormat(
            f"unsupported model format {index.media_type}: no model manifest in the index of {self._ref}",
            hint="this looks like a container image, not a model",
        )


def _only_foreign(ref: Reference, foreign: tuple[Descriptor, ...]) -> UnsupportedFormat:
    """The one-line refusal for a model whose weights the registry does not hold (non-distributable layers)."""
    where = next((_printable_url(url) for layer in foreign for url in layer.urls), None)
    at = f", only at {where}" if where else ", and the manifest names no URL for them"
    return UnsupportedFormat(
        f"the weights of {ref} are not in its registry: {len(foreign)} non-distributable layer(s){at}",
        hint="modelctl downloads only from registries; fetch the file yourself and run it by path or package it "
        "(modelctl package), or ask the publisher to push the weights as ordinary layers",
    )


def _printable_url(url: str) -> str:
    """``scheme://host/path`` of a foreign layer's URL: user info and the query (a pre-signed token) are never
    printed."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    text = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "a URL"
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _unique(manifest: Manifest) -> Iterator[Descriptor]:
    seen: set[str] = set()
    for layer in manifest.blobs[1:]:  # a non-distributable layer is never fetched from the registry
        if layer.digest not in seen:
            seen.add(layer.digest)
            yield layer
