"""Manifest validation: what a pushed manifest or index references, its subject, its referrer descriptor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import IntegrityError
from modelctl.oci import descriptor, safejson
from modelctl.oci import mediatypes as mt
from registry import names
from registry.errors import RegistryHTTPError

MAX_MANIFEST_BYTES: Final = descriptor.MAX_MANIFEST
"""The client's limit: a manifest this registry accepts is one modelctl can read."""
SUPPORTED: Final = (*mt.MANIFESTS, *mt.INDEXES)
_GENERIC_TYPES: Final = ("", "application/json", "application/octet-stream", "text/plain")


@dataclass(frozen=True, kw_only=True, slots=True)
class ManifestInfo:
    """The parts of a manifest the registry acts on. ``blobs`` must be linked in the repository (a
    non-distributable layer with ``urls`` is not among them), ``manifests`` (an index's children) must be
    manifests of the repository, unless the server accepts sparse manifests; the subject need not exist."""

    media_type: str
    digest: Digest
    size: int
    blobs: tuple[Digest, ...] = ()
    manifests: tuple[Digest, ...] = ()
    subject: Digest | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def referrer_descriptor(self) -> dict[str, Any]:
        """The descriptor the referrers API lists for this manifest."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


async def read_limited(chunks: AsyncIterator[bytes], limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """Read a whole body of at most ``limit`` bytes; SIZE_INVALID (413) beyond it."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RegistryHTTPError("SIZE_INVALID", f"manifest exceeds {limit} bytes", status=413)
        parts.append(chunk)
    return b"".join(parts)


def _load(raw: bytes) -> Any:
    """``json.loads`` for an untrusted body, by the client's bounded parser: MANIFEST_INVALID when it does not parse,
    is not UTF-8, nests too deep or holds too many values."""
    try:
        return safejson.loads(raw, what="manifest", max_size=MAX_MANIFEST_BYTES)
    except IntegrityError as exc:
        raise _invalid(exc.message) from None


def _invalid(message: str) -> RegistryHTTPError:
    return RegistryHTTPError("MANIFEST_INVALID", message)


def _descriptor(obj: Any, where: str) -> tuple[str, Digest]:
    """Check one descriptor; returns (mediaType, digest)."""
    if not isinstance(obj, dict):
        raise _invalid(f"{where}: expected a descriptor object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}: mediaType must be a non-empty string")
    parsed = names.stored_digest(digest)
    if parsed is None:
        raise RegistryHTTPError("DIGEST_INVALID", f"{where}: invalid or unsupported digest {str(digest)[:100]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}: size must be a non-negative integer")
    return media_type, parsed


def _layer_blob(obj: Any, where: str) -> Digest | None:
    """A layer's digest when the registry must hold its blob; None for a non-distributable layer with ``urls``
    (its blob lives at those URLs and is never pushed here, so it is not required)."""
    media_type, digest = _descriptor(obj, where)
    urls = obj.get("urls")
    if urls is None:
        return digest
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise _invalid(f"{where}: urls must be a list of non-empty strings")
    return None if urls and media_type in mt.NONDISTRIBUTABLE else digest


def _annotations(doc: Mapping[str, Any]) -> dict[str, str]:
    annotations = doc.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise _invalid("annotations must map strings to strings")
    return dict(annotations)


def media_type_of(content_type: str | None, doc: Mapping[str, Any]) -> str:
    """The manifest's media type: the request's Content-Type, which must agree with a `mediaType` field."""
    header = (content_type or "").split(";", 1)[0].strip().lower()
    field_value = doc.get("mediaType")
    if field_value is not None and not isinstance(field_value, str):
        raise _invalid("mediaType must be a string")
    if header in _GENERIC_TYPES:
        if field_value:
            return field_value
        return mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if field_value and field_value != header:
        raise _invalid(f"mediaType {field_value!r} does not match Content-Type {header!r}")
    return header


def parse(raw: bytes, content_type: str | None, algorithm: str = names.STORED_ALGORITHM) -> ManifestInfo:
    """Validate a pushed manifest (JSON, schemaVersion 2, a supported media type, well-formed descriptors).

    ``digest`` is the body's digest by ``algorithm``: that of the digest reference it was pushed or fetched by
    (sha256 or sha512), sha256 for a tag."""
    doc = _load(raw)
    if not isinstance(doc, dict):
        raise _invalid("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid(f"unsupported schemaVersion {doc.get('schemaVersion')!r}: only 2 is accepted")
    media_type = media_type_of(content_type, doc)
    if media_type not in SUPPORTED:
        raise _invalid(f"unsupported manifest media type {media_type!r}")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    subject = _descriptor(doc["subject"], "subject")[1] if doc.get("subject") is not None else None
    digest, annotations = _digest.of_bytes(raw, algorithm), _annotations(doc)
    if media_type in mt.INDEXES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise _invalid("an index needs a manifests list")
        return ManifestInfo(
            media_type=media_type,
            digest=digest,
            size=len(raw),
            manifests=tuple(_descriptor(c, f"manifests[{i}]")[1] for i, c in enumerate(children)),
            subject=subject,
            artifact_type=artifact_type or None,
            annotations=annotations,
        )
    config_type, config_digest = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _invalid("a manifest needs a layers list")
    held = (_layer_blob(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    return ManifestInfo(
        media_type=media_type,
        digest=digest,
        size=len(raw),
        blobs=(config_digest, *(d for d in held if d is not None)),
        subject=subject,
        artifact_type=artifact_type or config_type,
        annotations=annotations,
    )


def references(raw: bytes) -> tuple[Digest, ...]:
    """Every digest a stored manifest points at (config, layers, index children, subject excluded);
    tolerant: garbage collection must not stop on one odd document."""
    try:
        doc = _load(raw)
    except RegistryHTTPError:
        return ()
    if not isinstance(doc, dict):
        return ()
    out: list[str] = []
    if isinstance(doc.get("config"), dict):
        out.append(str(doc["config"].get("digest", "")))
    for key in ("layers", "manifests", "blobs"):
        items = doc.get(key)
        if isinstance(items, list):
            out.extend(str(item.get("digest", "")) for item in items if isinstance(item, dict))
    return tuple(d for d in map(names.stored_digest, out) if d is not None)
