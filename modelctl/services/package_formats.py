"""The two other shapes ``modelctl package`` writes besides Docker's model-spec: a CNCF ModelPack artifact and an
ordinary OCI image with the files under ``/models/``.

- ``modelpack``: what ModelPack-aware tools read (``modctl``, its CSI driver, Harbor, CRI-O's image volumes, which
  name each mounted file by its ``org.opencontainers.image.title``): ``artifactType``
  ``application/vnd.cncf.model.manifest.v1+json``, a config in ModelPack's schema (camelCase, no other fields)
  filled from the GGUF header, and each file its own raw layer (``weight``, ``weight.config``, ``doc``) carrying
  both path annotations and ModelPack's file-metadata annotation.
- ``image``: what container runtimes unpack (containerd, CRI-O, KServe's modelcars, Kubernetes image volumes):
  an image config with ``rootfs.diff_ids`` and one uncompressed tar layer per file, ``models/<name>`` with mode
  0644, owner 0:0 and a fixed mtime. The model's facts are config labels (``modelctl.architecture``, ...).

Reproducible: every byte follows from the inputs, ``--created`` / ``SOURCE_DATE_EPOCH``, and a file mtime that is
``SOURCE_DATE_EPOCH`` or else 0 (so a layer's digest never depends on the clock and re-packaging the same file
re-uses the registry's copy). The caller copies the raw layers in (``add_file``); the tar layers are written here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelctl import artifact
from modelctl.config import Config
from modelctl.digest import COPY_CHUNK, Hashing
from modelctl.errors import IntegrityError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout

DOCKER, MODELPACK, IMAGE = "docker", "modelpack", "image"
FORMATS = (DOCKER, MODELPACK, IMAGE)
IMAGE_PLATFORM = {"architecture": "amd64", "os": "linux"}
"""An image config must name a platform; a model has none, so this is a constant (the same bytes on any host)."""
_BLOCK = 512


@dataclass(frozen=True, kw_only=True, slots=True)
class Facts:
    """What the config of either format says about the model (from the first GGUF's header and the options)."""

    architecture: str
    parameters: int
    quantization: str
    name: str | None
    created: str
    context_size: int | None


def file_mtime() -> int:
    """The mtime every packaged file gets: ``SOURCE_DATE_EPOCH`` when set (the reproducible-builds clamp), else 0."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(epoch) if epoch.isdigit() else 0


def role_name(name: str, role: str) -> str:
    """The file name a layer gets, such that a reader that knows the file only by name finds its role again:
    a projector's name says ``mmproj`` (``projector.gguf`` becomes ``mmproj-projector.gguf``)."""
    return name if role != "mmproj" or "mmproj" in name.lower() else f"mmproj-{name}"


# -- modelpack --------------------------------------------------------------------------------------------------

_MODELPACK_TYPES = {
    "gguf": mt.MODELPACK_WEIGHT,
    "mmproj": mt.MODELPACK_WEIGHT,
    "chat_template": mt.MODELPACK_WEIGHT_CONFIG,
    "license": mt.MODELPACK_DOC,
}


def modelpack_layer(stored: Descriptor, role: str, name: str, mtime: int) -> Descriptor:
    """A raw file already in the store, described as a ModelPack layer of ``role`` (gguf, mmproj, ...)."""
    metadata = {
        "name": name.rsplit("/", 1)[-1],
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "size": stored.size,
        "mtime": _rfc3339(mtime),
        "typeflag": ord(tarfile.REGTYPE),
    }
    annotations = {
        mt.FILEPATH: name,
        mt.TITLE: name,
        mt.FILE_METADATA: json.dumps(metadata, separators=(",", ":")),
    }
    return dataclasses.replace(stored, media_type=_MODELPACK_TYPES[role], annotations=annotations)


def write_modelpack(store: Layout, layers: Sequence[Descriptor], facts: Facts) -> Descriptor:
    """Write the ModelPack config and manifest over ``layers`` (already in the store); the manifest's descriptor."""
    descriptor: dict[str, Any] = {"createdAt": facts.created}
    if facts.name:
        descriptor["name"] = facts.name
    model_config = {
        "descriptor": descriptor,
        "config": {
            "architecture": facts.architecture,
            "format": "gguf",
            "paramSize": param_size(facts.parameters),
            "quantization": facts.quantization,
        },
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers]},
    }
    return _write_manifest(store, mt.MODELPACK_CONFIG, model_config, layers, artifact_type=mt.MODELPACK_MANIFEST)


def param_size(n: int) -> str:
    """ModelPack's ``paramSize``: a count with at most one decimal and a scale letter (``134.5M``, ``8B``)."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + unit
    return str(n)


# -- image ------------------------------------------------------------------------------------------------------


def add_tar_layer(config: Config, store: Layout, path: Path, name: str, mtime: int) -> Descriptor:
    """Write ``path`` as a one-file tar layer (``models/`` then ``models/<name>``) into the store, hashing as it
    goes (one read of the file); the layer's descriptor, annotated with ``name``."""
    size = path.stat().st_size
    head = _header(artifact.IMAGE_ROOT, 0, mtime, directory=True) + _header(artifact.IMAGE_ROOT + name, size, mtime)
    tail = b"\0" * (-size % _BLOCK) + b"\0" * (2 * _BLOCK)  # pad the file to a block; the end-of-archive mark
    hashing = Hashing()
    config.ingest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=config.ingest_dir, prefix=".package-", delete=False) as out:
        tmp = Path(out.name)
        try:
            hashing.update(head)
            out.write(head)
            before = hashing.size
            with path.open("rb") as src:
                hashing.copy(src, out, chunk=COPY_CHUNK)
            if hashing.size - before != size:
                raise IntegrityError(f"{path} changed while it was packaged", hint="package it again")
            hashing.update(tail)
            out.write(tail)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    digest = hashing.digest()
    if store.has_blob(digest, hashing.size):
        tmp.unlink()
    else:
        store.commit_blob(tmp, digest)
    return Descriptor(media_type=mt.OCI_LAYER_TAR, digest=digest, size=hashing.size, annotations={mt.FILEPATH: name})


def write_image(store: Layout, layers: Sequence[Descriptor], facts: Facts) -> Descriptor:
    """Write the image config (uncompressed layers: each diff_id is the layer's digest) and the manifest."""
    labels = {
        artifact.LABEL_PREFIX + "format": "gguf",
        artifact.LABEL_PREFIX + "architecture": facts.architecture,
        artifact.LABEL_PREFIX + "parameters": param_size(facts.parameters),
        artifact.LABEL_PREFIX + "quantization": facts.quantization,
        mt.CREATED: facts.created,
    }
    if facts.context_size is not None:
        labels[artifact.LABEL_PREFIX + "context_size"] = str(facts.context_size)
    image_config = {
        "created": facts.created,
        **IMAGE_PLATFORM,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    return _write_manifest(store, mt.OCI_IMAGE_CONFIG, image_config, layers)


def _header(name: str, size: int, mtime: int, *, directory: bool = False) -> bytes:
    """One tar header (pax records only where ustar cannot say it: long or non-ASCII names, files over 8 GiB)."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = 0o755 if directory else 0o644
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


# -- shared -----------------------------------------------------------------------------------------------------


def _write_manifest(
    store: Layout,
    config_type: str,
    config_doc: dict[str, Any],
    layers: Sequence[Descriptor],
    *,
    artifact_type: str | None = None,
) -> Descriptor:
    config_bytes = json.dumps(config_doc, separators=(",", ":")).encode()
    config_digest = store.write_blob(config_bytes)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = {"mediaType": config_type, "digest": config_digest, "size": len(config_bytes)}
    manifest["layers"] = [layer.to_json() for layer in layers]
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write_blob(raw), size=len(raw))


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
