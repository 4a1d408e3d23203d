"""package: turn local GGUF file(s) into a model artifact in the local store, in one of three shapes (``--format``):
Docker Model Runner's v0.1 artifact (the default), a CNCF ModelPack artifact, or an OCI image with the files under
``/models/`` (the last two: :mod:`modelctl.services.package_formats`).

The Docker config follows Docker's model-spec field by field (snake_case, string values, ``context_size`` an integer,
the ``gguf`` map of metadata as strings without arrays longer than 50 items), so ``docker model`` reads what we
write. Digests are deterministic: the creation time comes from ``--created`` or ``SOURCE_DATE_EPOCH``.

Ctrl-C, SIGTERM or a full disk half-way removes the copy in progress (under ``ingest/``) and tags nothing; the files
already copied stay in ``blobs/`` (complete and verified; ``prune`` removes them if they stay unused).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelctl import atomic
from modelctl.config import Config
from modelctl.digest import Digest, copy_hashed
from modelctl.errors import INTERRUPTS, DigestMismatch, Interrupted, NoSpace, NotFound, UsageError
from modelctl.fit.shapes import parameter_count, quantization
from modelctl.gguf import FileSource, read_header
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.reference import Reference
from modelctl.services import package_formats as formats
from modelctl.store import Layout
from modelctl.store import models as local

MAX_GGUF_ARRAY = 50


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageInput:
    gguf: Sequence[Path]
    license: Sequence[Path] = ()
    mmproj: Path | None = None
    chat_template: Path | None = None
    context_size: int | None = None
    card: Path | None = None
    created: str | None = None
    format: str = formats.DOCKER
    """``docker``, ``modelpack`` or ``image``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageResult:
    reference: str
    digest: str
    size: int


def package(config: Config, refs: Sequence[Reference], spec: PackageInput) -> PackageResult:
    for path in [*spec.gguf, *spec.license, spec.mmproj, spec.chat_template, spec.card]:
        if path is not None and not path.is_file():
            raise NotFound(f"{path} does not exist", hint="check the path")
    if not spec.gguf:
        raise UsageError("no GGUF file given", hint="pass --gguf FILE (once per shard, in order)")
    if spec.format not in formats.FORMATS:
        raise UsageError(f"unknown --format {spec.format!r}", hint="use docker, modelpack or image")
    if spec.created is not None:
        check_created(spec.created)
    if spec.format == formats.MODELPACK and spec.context_size is not None:
        raise UsageError(
            "a ModelPack config has no field for a context size",
            hint="drop --context-size, or use --format docker or image",
        )
    store = local.layout(config)
    store.ensure()
    total = sum(p.stat().st_size for p in [*spec.gguf, *spec.license, spec.mmproj, spec.chat_template] if p)
    layers: list[Descriptor] = []
    tagged: list[Reference] = []
    try:
        return _package(config, store, refs, spec, layers, tagged)
    except INTERRUPTS as exc:
        done = sum(x.size for x in layers)
        what = "the model card was not attached" if tagged else "no model was tagged (the partial copy was removed)"
        line = f"interrupted: {done} of {total} bytes of the files are in the store, {what}"
        raise Interrupted.by(exc, f"{line}; run the same command to package it") from None
    except (OSError, NoSpace) as exc:
        if isinstance(exc, OSError) and not atomic.disk_full(exc):
            raise
        where = Path(exc.directory) if isinstance(exc, NoSpace) and exc.directory else config.ingest_dir
        need = total - sum(x.size for x in layers)
        hint = f"{atomic.SPACE_HINT}; no model was tagged" if not tagged else atomic.SPACE_HINT
        raise atomic.no_space(where, need, f"packaging {refs[0]}", hint=hint) from exc


def _package(
    config: Config,
    store: Layout,
    refs: Sequence[Reference],
    spec: PackageInput,
    layers: list[Descriptor],
    tagged: list[Reference],
) -> PackageResult:
    """Copy the files in (``layers`` grows as each is stored), write config and manifest, tag (``tagged``)."""
    shards = len(spec.gguf)
    files = [
        (path, "gguf", path.name if shards > 1 else (path.name or f"model-{i}.gguf"))
        for i, path in enumerate(spec.gguf, start=1)
    ]
    files += [(path, "license", path.name) for path in spec.license]
    if spec.mmproj:
        files.append((spec.mmproj, "mmproj", spec.mmproj.name))
    if spec.chat_template:
        files.append((spec.chat_template, "chat_template", spec.chat_template.name))
    mtime = formats.file_mtime()
    for path, role, name in files:
        layers.append(_add_layer(config, store, path, role, name, spec.format, mtime))
    created = _created(spec)
    if spec.format == formats.DOCKER:
        desc, created = write_model(
            store, layers, first_gguf=spec.gguf[0], context_size=spec.context_size, created=created
        )
    else:
        facts = _facts(spec.gguf[0], created, spec.context_size)
        write = formats.write_modelpack if spec.format == formats.MODELPACK else formats.write_image
        desc = write(store, layers, facts)
    for ref in refs:
        store.tag(str(ref), desc)
        tagged.append(ref)
    if spec.card:
        attach_card(store, desc, spec.card.read_bytes(), created=created)
    return PackageResult(reference=str(refs[0]), digest=desc.digest, size=sum(x.size for x in layers) + desc.size)


_DOCKER_TYPES = {
    "gguf": mt.DOCKER_GGUF,
    "license": mt.DOCKER_LICENSE,
    "mmproj": mt.DOCKER_MMPROJ,
    "chat_template": mt.DOCKER_CHAT_TEMPLATE,
}


def _add_layer(config: Config, store: Layout, path: Path, role: str, name: str, fmt: str, mtime: int) -> Descriptor:
    """One input file into the store as the layer ``fmt`` wants for ``role`` (gguf, license, mmproj, ...)."""
    if fmt == formats.IMAGE:
        return formats.add_tar_layer(config, store, path, formats.role_name(name, role), mtime)
    stored = add_file(config, store, path, _DOCKER_TYPES[role], name)
    if fmt == formats.MODELPACK:
        return formats.modelpack_layer(stored, role, formats.role_name(name, role), mtime)
    return stored


def _facts(first_gguf: Path, created: str, context_size: int | None) -> formats.Facts:
    header = read_header(FileSource(first_gguf))
    name = header.metadata.get("general.name")
    return formats.Facts(
        architecture=header.architecture or "unknown",
        parameters=parameter_count(header),
        quantization=quantization(header) or "unknown",
        name=name.strip() or None if isinstance(name, str) else None,
        created=created,
        context_size=context_size,
    )


def write_model(
    store: Layout, layers: Sequence[Descriptor], *, first_gguf: Path, context_size: int | None, created: str
) -> tuple[Descriptor, str]:
    """Write the v0.1 config (from ``first_gguf``'s header) and the manifest over ``layers``, which must already be
    in the store; return the manifest's descriptor (untagged) and the creation time written."""
    gguf_layers = [layer for layer in layers if layer.media_type == mt.DOCKER_GGUF]
    model_config = _config_doc(first_gguf, context_size, created, gguf_layers, layers)
    config_bytes = json.dumps(model_config, separators=(",", ":")).encode()
    config_digest = store.write_blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config_bytes)},
        "layers": [layer.to_json() for layer in layers],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    digest = store.write_blob(raw)
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(raw)), created


def attach_card(store: Layout, subject: Descriptor, card: bytes, *, created: str) -> str:
    """Store a model card as an OCI referrer of ``subject`` (artifactType application/vnd.modelctl.card.v1)."""
    empty = b"{}"
    empty_digest = store.write_blob(empty)
    card_digest = store.write_blob(card)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.MODEL_CARD_ARTIFACT,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": empty_digest, "size": len(empty)},
        "layers": [
            {
                "mediaType": mt.MODEL_CARD_LAYER,
                "digest": card_digest,
                "size": len(card),
                "annotations": {mt.TITLE: "README.md"},
            }
        ],
        "subject": subject.to_json(),
        "annotations": {"org.opencontainers.image.created": created},
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    return store.write_blob(raw)


def add_file(
    config: Config,
    store: Layout,
    path: Path,
    media_type: str,
    name: str,
    *,
    move: bool = False,
    expected: Digest | None = None,
) -> Descriptor:
    """Put a file into the store while hashing it (one read), then commit it atomically.

    ``move`` commits ``path`` itself (it must be on the store's filesystem, e.g. under ingest/) instead of a copy.
    ``expected`` (``sha256:<hex>``) is checked before anything enters the store: a mismatch deletes the moved file
    and raises DigestMismatch.
    """
    config.ingest_dir.mkdir(parents=True, exist_ok=True)
    if move:
        tmp = path
        with path.open("rb") as src:
            digest, size = copy_hashed(src, None, chunk=8 << 20)
    else:
        with tempfile.NamedTemporaryFile(dir=config.ingest_dir, prefix=".package-", delete=False) as out:
            tmp = Path(out.name)
            try:
                with path.open("rb") as src:
                    digest, size = copy_hashed(src, out, chunk=8 << 20)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    if expected is not None and digest != expected:
        tmp.unlink(missing_ok=True)
        raise DigestMismatch(expected, digest, what=name)
    if store.has_blob(digest, size):
        tmp.unlink()
    else:
        store.commit_blob(tmp, digest)
    return Descriptor(media_type=media_type, digest=digest, size=size, annotations={mt.FILEPATH: name})


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def check_created(text: str) -> str:
    """``--created`` must be an RFC 3339 time (it goes into the config and the manifest as is): UsageError else."""
    valid = _RFC3339.fullmatch(text) is not None
    if valid:
        try:
            datetime.fromisoformat(text.upper().replace(" ", "T"))
        except ValueError:  # 2025-02-30 matches the pattern
            valid = False
    if not valid:
        raise UsageError(
            f"--created {text[:60]!r} is not an RFC 3339 time",
            hint="write it as 2025-01-31T12:00:00Z (or with an offset, +02:00)",
        )
    return text


def _created(spec: PackageInput) -> str:
    if spec.created:
        return spec.created
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # the reproducible-builds convention
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _config_doc(
    first_gguf: Path,
    context_size: int | None,
    created: str,
    gguf_layers: Sequence[Descriptor],
    layers: Sequence[Descriptor],
) -> dict[str, Any]:
    meta = _gguf_metadata(first_gguf)
    summary = meta.pop("__summary__")
    inner: dict[str, Any] = {
        "format": "gguf",
        "quantization": summary["quantization"],
        "parameters": summary["parameters"],
        "architecture": summary["architecture"],
        "size": _size_text(sum(layer.size for layer in gguf_layers)),
        "gguf": meta,
    }
    if context_size is not None:
        inner["context_size"] = context_size
    return {
        "config": inner,
        "descriptor": {"created": created},
        "rootfs": {"type": "rootfs", "diff_ids": [layer.digest for layer in layers]},
    }


def _size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.2f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """GGUF metadata as Docker writes it (strings; long arrays left out) plus a summary for the config fields."""

    header = read_header(FileSource(path))
    out: dict[str, Any] = {}
    for key, value in header.metadata.items():
        if isinstance(value, list | tuple):
            if len(value) > MAX_GGUF_ARRAY:
                continue
            out[key] = json.dumps(list(value))
        elif isinstance(value, bytes):
            continue
        else:
            out[key] = str(value)
    params = parameter_count(header)
    out["__summary__"] = {
        "quantization": quantization(header) or "unknown",
        "parameters": _params_text(params),
        "architecture": header.architecture or "unknown",
    }
    return out


def _params_text(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
