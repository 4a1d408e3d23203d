"""Artifacts: one :class:`Model` view over every model format modelctl reads from a manifest and its config.

Formats (FACTS.md section 1): Docker Model Runner (``application/vnd.docker.ai.*``, config v0.1/v0.2,
snake_case), CNCF ModelPack (``application/vnd.cncf.model.*`` and the pre-rename
``application/vnd.cnai.model.*``, camelCase config), Ollama's registry (``application/vnd.ollama.image.*``
layers under a container-image config) and model images (``modelctl package --format image``: an ordinary OCI
image whose tar layers each hold one file under ``/models/``, named by the layer's ``org.cncf.model.filepath``;
:class:`Packed` says where a file sits, the store unpacks it). Everything here is untrusted input: wrong JSON
types raise :class:`IntegrityError` with one line, annotated file paths are checked so they can never leave a
model's directory, and field order never matters. The caller verifies the config bytes against
``manifest.config.digest`` (the store and the registry client do).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modelctl.digest import Digest
from modelctl.digest import parse as parse_digest
from modelctl.errors import IntegrityError, UnsupportedFormat
from modelctl.oci import mediatypes as mt
from modelctl.oci import safejson
from modelctl.oci.descriptor import Descriptor, Manifest

DOCKER = "docker"
MODELPACK = "modelpack"
OLLAMA = "ollama"
IMAGE = "image"

IMAGE_ROOT = "models/"
"""Where a model image keeps its files (KServe's modelcars and RamaLama's car images use the same directory)."""
LABEL_PREFIX = "modelctl."
"""Image config labels modelctl writes the model's facts under (``modelctl.architecture`` and so on)."""
_TAR_LAYERS = {mt.OCI_LAYER_TAR: False, mt.OCI_LAYER_TAR_GZIP: True, mt.DOCKER_LAYER_TAR_GZIP: True}
"""Image layer media types modelctl unpacks, and whether each is gzip-compressed."""

_MODELPACK_MANIFESTS = tuple(p + "manifest.v1+json" for p in mt.MODELPACK_PREFIXES)
_MODELPACK_CONFIGS = tuple(p + "config.v1+json" for p in mt.MODELPACK_PREFIXES)
_MODELPACK_LAYER = re.compile(r"(weight|weight\.config|doc|code|dataset)\.v1\.(raw|tar|tar\+gzip|tar\+zstd)")
_SHARD = re.compile(r"-(\d{1,5})-of-(\d{1,5})\.gguf\Z", re.IGNORECASE)
_LICENSE_NAME = re.compile(r"(licen[cs]e|copying)([._-].*)?", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_MAX_PATH = 1024
_MAX_COMPONENT = 255
MAX_CONFIG = 4 << 20
"""Bytes a model config may have: real ones are a few KiB (Docker's leaves GGUF arrays of more than 50 items out)."""
_BROKEN_CONFIG = "its publisher wrote a broken config, or it was tampered with; modelctl cannot read this model"

_SUPPORTED_HINT = (
    "modelctl reads Docker model artifacts (ai/...), CNCF ModelPack models, Ollama models and model images "
    "(modelctl package --format image)"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Packed:
    """A file that is one member of a tar layer (the image format) rather than the layer's whole blob."""

    layer: Descriptor
    member: str
    """The member's path inside the tar, ``models/<file path>`` (a leading ``/`` or ``./`` also matches)."""
    diff_id: Digest
    """The image config's digest of the uncompressed tar: what unpacking verifies."""
    gzip: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Model:
    """What a model artifact holds, whatever its format. Descriptors point at blobs; nothing is downloaded."""

    format: str
    """``docker``, ``modelpack``, ``ollama`` or ``image``."""
    manifest_digest: str
    gguf: tuple[Descriptor, ...] = ()
    """GGUF weights in shard order; empty for a model modelctl cannot run (safetensors, tar-packed)."""
    mmproj: Descriptor | None = None
    licenses: tuple[Descriptor, ...] = ()
    chat_template: Descriptor | None = None
    """A Jinja chat template (Docker)."""
    ollama_template: Descriptor | None = None
    """A Go template (Ollama); not Jinja."""
    params: Descriptor | None = None
    """Ollama's default sampling parameters (JSON)."""
    system: Descriptor | None = None
    other: tuple[Descriptor, ...] = ()
    parameters: str | None = None
    """Parameter count as published, e.g. ``8.03B`` (spaces removed: ``361.82 M`` -> ``361.82M``)."""
    quantization: str | None = None
    architecture: str | None = None
    context_size: int | None = None
    """The packaged default context (Docker ``context_size``); the GGUF's own maximum is in its header."""
    foreign: tuple[Descriptor, ...] = ()
    """Non-distributable layers: only at their ``urls``, never fetched, not in the store."""
    size: int = 0
    """Sum of the sizes of the layers a registry holds (non-distributable ones left out)."""
    weights_size: int = 0
    """Sum of the GGUF shards' sizes."""
    created: str | None = None
    gguf_metadata: Mapping[str, str] = field(default_factory=dict)
    """Docker config's ``gguf`` map (GGUF metadata rendered as strings); empty for other formats."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The parsed config JSON."""
    packed: Mapping[Digest, Packed] = field(default_factory=dict)
    """Layer digest -> the file inside it, for layers that must be unpacked (the image format); empty otherwise."""


def classify(manifest: Manifest) -> str:
    """``docker``, ``modelpack``, ``ollama`` or ``image``; :class:`UnsupportedFormat` for anything else."""
    config_type = manifest.config.media_type
    layer_types = {layer.media_type for layer in manifest.layers}
    if config_type == mt.DOCKER_MODEL_CONFIG_PRERELEASE or mt.DOCKER_PRERELEASE_FILE in layer_types:
        raise UnsupportedFormat(
            f"unsupported model format {_printable(config_type)}",
            hint="this is a pre-release Docker model artifact; re-package the GGUF with a current tool "
            "(modelctl package or docker model package) and push it again",
        )
    if config_type in (mt.DOCKER_MODEL_CONFIG_V01, mt.DOCKER_MODEL_CONFIG_V02):
        return DOCKER
    if manifest.artifact_type in _MODELPACK_MANIFESTS or config_type in _MODELPACK_CONFIGS:
        return MODELPACK
    if config_type in (mt.OLLAMA_CONFIG, mt.OCI_IMAGE_CONFIG):
        if config_type == mt.OLLAMA_CONFIG and any(t.startswith(mt.OLLAMA_PREFIX) for t in layer_types):
            return OLLAMA
        if any(layer.media_type in _TAR_LAYERS and _annotated_name(layer) for layer in manifest.layers):
            return IMAGE
        raise UnsupportedFormat(
            f"unsupported model format {_printable(config_type)}",
            hint="this is a container image, not a model: modelctl runs images whose layers name their file "
            "under /models/ (modelctl package --format image)",
        )
    if config_type.startswith("application/vnd.docker.ai."):
        raise UnsupportedFormat(
            f"unsupported model format {_printable(config_type)}",
            hint="a Docker model format newer than this modelctl knows; upgrade modelctl",
        )
    what = manifest.artifact_type if config_type == mt.OCI_EMPTY and manifest.artifact_type else config_type
    raise UnsupportedFormat(f"unsupported model format {_printable(what)}", hint=_SUPPORTED_HINT)


def from_manifest(manifest: Manifest, config: bytes) -> Model:
    """The :class:`Model` view of ``manifest`` and its (caller-verified) config blob."""
    kind = classify(manifest)
    doc = _parse_json(config)
    for index, layer in enumerate(manifest.layers):
        file_name(layer, index)  # a hostile path annotation fails here, before anything is downloaded
    if kind == DOCKER:
        fields = _docker(manifest, doc)
    elif kind == MODELPACK:
        fields = _modelpack(manifest, doc)
    elif kind == IMAGE:
        fields = _image(manifest, doc)
    else:
        fields = _ollama(manifest, doc)
    gguf = _shard_order(fields.pop("gguf"))
    return Model(
        format=kind,
        manifest_digest=manifest.digest,
        gguf=gguf,
        foreign=tuple(layer for layer in manifest.layers if not layer.distributable),
        size=sum(layer.size for layer in manifest.blobs[1:]),
        weights_size=sum(layer.size for layer in gguf),
        config=doc,
        **fields,
    )


def file_name(desc: Descriptor, index: int, *, shards: tuple[int, int] | None = None) -> str:
    """A safe relative file name for layer ``index`` of a manifest.

    Taken from the ``org.cncf.model.filepath`` / ``org.cnai.model.filepath`` /
    ``org.opencontainers.image.title`` annotation when present (IntegrityError if it is absolute, has ``..``,
    backslashes, NUL or control characters, or is empty); otherwise a default by media type (``model.gguf``,
    or ``model-0000N-of-0000M.gguf`` when ``shards=(N, M)`` is given).
    """
    annotated = _annotated_name(desc)
    if annotated is not None:
        return _check_relative(annotated)
    media_type = desc.media_type
    if media_type in (mt.DOCKER_GGUF, mt.OLLAMA_MODEL) or (
        media_type.endswith(".weight.v1.raw") and media_type.startswith(mt.MODELPACK_PREFIXES)
    ):
        if shards is not None:
            return f"model-{shards[0]:05d}-of-{shards[1]:05d}.gguf"
        return "model.gguf"
    defaults = {
        mt.DOCKER_MMPROJ: "mmproj.gguf",
        mt.DOCKER_MMPROJ_OLD: "mmproj.gguf",
        mt.OLLAMA_PROJECTOR: "mmproj.gguf",
        mt.DOCKER_LICENSE: "LICENSE",
        mt.OLLAMA_LICENSE: "LICENSE",
        mt.DOCKER_CHAT_TEMPLATE: "template.jinja",
        mt.OLLAMA_TEMPLATE: "template.tmpl",
        mt.OLLAMA_PARAMS: "params.json",
        mt.OLLAMA_SYSTEM: "system.txt",
        mt.OLLAMA_PREFIX + "messages": "messages.json",
        mt.OLLAMA_PREFIX + "adapter": "adapter.gguf",
        mt.DOCKER_SAFETENSORS: "model.safetensors",
        mt.DOCKER_DDUF: "model.dduf",
    }
    if media_type in defaults:
        return defaults[media_type]
    for suffix, ext in ((".tar", ".tar"), (".tar+gzip", ".tar.gz"), (".tar+zstd", ".tar.zst")):
        if media_type.endswith(suffix):
            return f"layer-{index}{ext}"
    return f"layer-{index}"


# -- formats -------------------------------------------------------------------------------------------------


def _docker(manifest: Manifest, doc: dict[str, Any]) -> dict[str, Any]:
    slots = _Slots()
    for layer in manifest.layers:
        t = layer.media_type
        if t == mt.DOCKER_GGUF:
            slots.gguf.append(layer)
        elif t == mt.DOCKER_LICENSE:
            slots.licenses.append(layer)
        elif t in (mt.DOCKER_MMPROJ, mt.DOCKER_MMPROJ_OLD):
            slots.put("mmproj", layer)
        elif t == mt.DOCKER_CHAT_TEMPLATE:
            slots.put("chat_template", layer)
        else:  # safetensors, dduf, model.file and anything newer: recognised, kept, not run
            slots.other.append(layer)
    cfg = _object(doc, "config")
    metadata = _gguf_map(cfg.get("gguf"))
    return slots.fields() | {
        "parameters": _size_text(_text(cfg, "parameters", "config.parameters", number=True)),
        "quantization": _text(cfg, "quantization", "config.quantization"),
        "architecture": (
            _text(cfg, "architecture", "config.architecture") or metadata.get("general.architecture")
        ),
        "context_size": _context_size(cfg.get("context_size")),
        "created": _text(_object(doc, "descriptor"), "created", "descriptor.created"),
        "gguf_metadata": metadata,
    }


def _modelpack(manifest: Manifest, doc: dict[str, Any]) -> dict[str, Any]:
    cfg = _object(doc, "config")
    weights_format = (_text(cfg, "format", "config.format") or "").lower()
    slots = _Slots()
    for layer in manifest.layers:
        match = None
        for prefix in mt.MODELPACK_PREFIXES:
            if layer.media_type.startswith(prefix):
                match = _MODELPACK_LAYER.fullmatch(layer.media_type[len(prefix) :])
        name = _annotated_name(layer)
        base = PurePosixPath(name).name.lower() if name else ""
        if match is None or match.group(2) != "raw":  # tar-packed files: recognised, but not loadable as is
            slots.other.append(layer)
        elif match.group(1) == "weight" and (weights_format == "gguf" or base.endswith(".gguf")):
            if "mmproj" in base:
                slots.put("mmproj", layer)
            else:
                slots.gguf.append(layer)
        elif match.group(1) == "doc" and _LICENSE_NAME.fullmatch(base):
            slots.licenses.append(layer)
        elif match.group(1) == "weight.config" and base.endswith(".jinja"):
            slots.put("chat_template", layer)
        else:
            slots.other.append(layer)
    return slots.fields() | {
        "parameters": _size_text(_text(cfg, "paramSize", "config.paramSize", number=True)),
        "quantization": _text(cfg, "quantization", "config.quantization"),
        "architecture": _text(cfg, "architecture", "config.architecture"),
        "created": _text(_object(doc, "descriptor"), "createdAt", "descriptor.createdAt"),
    }


def _image(manifest: Manifest, doc: dict[str, Any]) -> dict[str, Any]:
    """A model image: each annotated tar layer holds one file under ``/models/``; its role follows its name
    (``.gguf`` weights, ``mmproj`` in the name a projector, ``.jinja`` a chat template, LICENSE a license)."""
    diff_ids = _diff_ids(_object(doc, "rootfs"), len(manifest.layers))
    slots = _Slots()
    packed: dict[Digest, Packed] = {}
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        name = _annotated_name(layer)
        gzip = _TAR_LAYERS.get(layer.media_type)
        if name is None or gzip is None:
            slots.other.append(layer)  # a base layer, or one modelctl cannot unpack: kept, not used
            continue
        if not gzip and diff_id != layer.digest:
            raise IntegrityError(
                f"malformed image config: rootfs.diff_ids names {diff_id} for the uncompressed layer {layer.digest}",
                hint="the image is corrupt; package it again",
            )
        packed[layer.digest] = Packed(layer=layer, member=IMAGE_ROOT + name, diff_id=diff_id, gzip=gzip)
        base = PurePosixPath(name).name.lower()
        if base.endswith(".gguf") and "mmproj" in base:
            slots.put("mmproj", layer)
        elif base.endswith(".gguf"):
            slots.gguf.append(layer)
        elif base.endswith(".jinja"):
            slots.put("chat_template", layer)
        elif _LICENSE_NAME.fullmatch(base):
            slots.licenses.append(layer)
        else:
            slots.other.append(layer)
    labels = _object(_object(doc, "config"), "Labels")
    return slots.fields() | {
        "parameters": _size_text(_text(labels, LABEL_PREFIX + "parameters", "Labels", number=True)),
        "quantization": _text(labels, LABEL_PREFIX + "quantization", "Labels"),
        "architecture": _text(labels, LABEL_PREFIX + "architecture", "Labels"),
        "context_size": _context_size(labels.get(LABEL_PREFIX + "context_size")),
        "created": _text(doc, "created", "created"),
        "packed": packed,
    }


def _diff_ids(rootfs: Mapping[str, Any], count: int) -> list[Digest]:
    """``rootfs.diff_ids``: one digest per layer, in layer order."""
    values = rootfs.get("diff_ids")
    if not isinstance(values, list) or len(values) != count:
        raise IntegrityError(
            "malformed image config: rootfs.diff_ids must list one digest per layer",
            hint="the image is corrupt; package it again",
        )
    out: list[Digest] = []
    for value in values:
        parsed = parse_digest(value) if isinstance(value, str) else None
        if parsed is None:
            raise IntegrityError(f"malformed image config: bad diff_id {_printable(str(value))}")
        out.append(parsed)
    return out


def _ollama(manifest: Manifest, doc: dict[str, Any]) -> dict[str, Any]:
    slots = _Slots()
    singles = {
        mt.OLLAMA_PROJECTOR: "mmproj",
        mt.OLLAMA_TEMPLATE: "ollama_template",
        mt.OLLAMA_PARAMS: "params",
        mt.OLLAMA_SYSTEM: "system",
    }
    for layer in manifest.layers:
        if layer.media_type == mt.OLLAMA_MODEL:
            slots.gguf.append(layer)
        elif layer.media_type == mt.OLLAMA_LICENSE:
            slots.licenses.append(layer)
        elif layer.media_type in singles:
            slots.put(singles[layer.media_type], layer)
        else:  # adapter, messages, anything newer
            slots.other.append(layer)
    family = _text(doc, "model_family", "model_family")
    if family is None:
        families = doc.get("model_families")
        if isinstance(families, list) and families and isinstance(families[0], str):
            family = families[0] or None
    # Ollama's config also has "architecture", but that one is the CPU (amd64), not the model's.
    return slots.fields() | {
        "parameters": _size_text(_text(doc, "model_type", "model_type", number=True)),
        "quantization": _text(doc, "file_type", "file_type"),
        "architecture": family,
        "created": _text(doc, "created", "created"),
    }


class _Slots:
    """Layers sorted into the Model's fields; a second layer for a one-layer field goes to ``other``."""

    def __init__(self) -> None:
        self.gguf: list[Descriptor] = []
        self.licenses: list[Descriptor] = []
        self.other: list[Descriptor] = []
        self.single: dict[str, Descriptor] = {}

    def put(self, name: str, layer: Descriptor) -> None:
        if name in self.single:
            self.other.append(layer)
        else:
            self.single[name] = layer

    def fields(self) -> dict[str, Any]:
        return {
            "gguf": tuple(self.gguf),
            "licenses": tuple(self.licenses),
            "other": tuple(self.other),
            **self.single,
        }


def _shard_order(shards: tuple[Descriptor, ...]) -> tuple[Descriptor, ...]:
    """Sort by the ``-0000N-of-0000M.gguf`` number when every shard's name carries one; else keep order."""
    if len(shards) < 2:
        return shards
    numbers: list[int] = []
    for layer in shards:
        name = _annotated_name(layer)
        match = _SHARD.search(name) if name else None
        if match is None:
            return shards
        numbers.append(int(match.group(1)))
    return tuple(layer for _, _, layer in sorted(zip(numbers, range(len(shards)), shards, strict=True)))


# -- untrusted values ----------------------------------------------------------------------------------------


def _annotated_name(desc: Descriptor) -> str | None:
    for key in (mt.FILEPATH, mt.FILEPATH_CNAI, mt.TITLE):
        value = desc.annotations.get(key)
        if value is not None:
            return value
    return None


def _check_relative(name: str) -> str:
    def bad(why: str) -> IntegrityError:
        return IntegrityError(
            f"unsafe file path {_printable(name)} in a layer annotation: {why}",
            hint="the artifact is malformed or hostile; ask its publisher to fix it",
        )

    if not isinstance(name, str) or not name:
        raise bad("empty")
    if len(name) > _MAX_PATH:
        raise bad("too long")
    if "\\" in name:
        raise bad("backslash")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in name):
        raise bad("control character")
    if name.startswith("/"):
        raise bad("absolute path")
    parts = name.split("/")
    if _DRIVE.match(parts[0]):
        raise bad("drive letter")
    for part in parts:
        if part in ("", ".", ".."):
            raise bad("empty, '.' or '..' component")
        if len(part.encode()) > _MAX_COMPONENT:
            raise bad("component too long")
    return name


def _parse_json(data: bytes) -> dict[str, Any]:
    doc = safejson.loads(data, what="model config", max_size=MAX_CONFIG, hint=_BROKEN_CONFIG)
    if not isinstance(doc, dict):
        raise IntegrityError("malformed model config: expected a JSON object", hint=_BROKEN_CONFIG)
    return doc


def _object(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IntegrityError(f"malformed model config: {key} must be an object")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str, *, number: bool = False) -> str | None:
    """A string field; ``number=True`` also takes a finite JSON number (a parameter count written as 8e9)."""
    value = obj.get(key)
    if value is None:
        return None
    if number and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        value = str(value)
    if not isinstance(value, str):
        raise IntegrityError(f"malformed model config: {where} must be a string")
    return value.strip() or None


def _size_text(text: str | None) -> str | None:
    """``361.82 M`` -> ``361.82M``: older artifacts put a space between number and unit."""
    return re.sub(r"\s+", "", text) if text else text


def _context_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IntegrityError("malformed model config: config.context_size must be a non-negative integer")
    return value or None


def _gguf_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IntegrityError("malformed model config: config.gguf must be an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[key] = item
        elif isinstance(item, bool | int | float):
            out[key] = json.dumps(item)  # inf/nan from 1e400 become "Infinity"/"NaN": still one string
        elif item is not None:
            raise IntegrityError(f"malformed model config: config.gguf[{_printable(key)}] must be a string")
    return out


def _printable(text: str) -> str:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return shown if shown.isprintable() else repr(shown)
