"""Descriptors and manifests: the OCI content model as frozen values, parsed defensively from JSON bytes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelctl import digest as _digest
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, shown
from modelctl.oci import mediatypes as mt
from modelctl.oci import safejson

MAX_MANIFEST = 4 << 20
"""Bytes a manifest or index may have (real ones are a few KiB); the registry server refuses larger ones too."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    platform: Mapping[str, Any] | None = None
    urls: tuple[str, ...] = ()
    """Where else the blob may be fetched from (OCI ``urls``); modelctl never follows them."""

    @property
    def distributable(self) -> bool:
        """False for a non-distributable (foreign) layer: its blob is not expected in any registry or store."""
        return self.media_type not in mt.NONDISTRIBUTABLE

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", Digest(self.digest))  # free for a Digest; validates anything else

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise IntegrityError(f"malformed {where}: expected an object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise IntegrityError(f"malformed {where}: mediaType and digest must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise IntegrityError(f"malformed {where}: size must be a non-negative integer")
        parsed = Digest(digest)
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise IntegrityError(f"malformed {where}: annotations must map strings to strings")
        artifact_type = obj.get("artifactType")
        platform = obj.get("platform")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise IntegrityError(f"malformed {where}: urls must be a list of strings")
        return cls(
            media_type=media_type,
            digest=parsed,
            size=size,
            annotations=annotations,
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            platform=platform if isinstance(platform, dict) else None,
            urls=tuple(urls),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2). ``raw`` keeps the exact bytes: their digest is the model ID."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes
    digest: Digest
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The config and the layers a registry or a store holds (non-distributable layers left out)."""
        return (self.config, *(layer for layer in self.layers if layer.distributable))


@dataclass(frozen=True, kw_only=True, slots=True)
class Index:
    """An image index / manifest list; models are single manifests but we stay defensive."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes
    digest: Digest


def parse(
    raw: bytes, media_type: str | None = None, *, algorithm: str = _digest.SHA256, what: str = "manifest"
) -> Manifest | Index:
    """Parse manifest or index bytes. The media type comes from the document, else from the HTTP header; the
    document's digest is of ``algorithm`` (sha512 for one fetched or stored by a sha512 digest). ``what`` names the
    document in the one-line IntegrityError a malformed, oversized or too deeply nested one raises."""
    doc = safejson.loads(raw, what=what, max_size=MAX_MANIFEST)
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed {what}: expected a JSON object")
    kind = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else media_type
    digest = _digest.of_bytes(raw, algorithm)
    if kind in mt.INDEXES or (kind is None and "manifests" in doc):
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise IntegrityError("malformed index: manifests must be a list")
        return Index(
            media_type=kind or mt.OCI_INDEX,
            manifests=tuple(Descriptor.from_json(m, where="index entry") for m in items),
            raw=raw,
            digest=digest,
        )
    if doc.get("schemaVersion") != 2:
        raise IntegrityError(f"unsupported manifest schemaVersion {shown(doc.get('schemaVersion'))}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise IntegrityError("malformed manifest: layers must be a list")
    annotations = doc.get("annotations") or {}
    subject = doc.get("subject")
    artifact_type = doc.get("artifactType")
    return Manifest(
        media_type=kind or mt.OCI_MANIFEST,
        config=Descriptor.from_json(doc.get("config"), where="manifest config"),
        layers=tuple(Descriptor.from_json(layer, where="manifest layer") for layer in layers),
        raw=raw,
        digest=digest,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        subject=Descriptor.from_json(subject, where="manifest subject") if subject is not None else None,
        annotations=annotations if isinstance(annotations, dict) else {},
    )
