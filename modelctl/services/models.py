"""Local model management: list, inspect, tag, remove, path, disk usage. No network here but ``inspect --remote``.

``inspect_remote`` imports :mod:`modelctl.sources` inside the function: the source stack (httpx, the registry
client) would otherwise load for every local command such as ``list``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelctl import digest as _digest
from modelctl import reference
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, NotFound, UsageError
from modelctl.store import models as local

# The sources (httpx, the registry client) are imported only by inspect --remote: list, rm and path stay light.


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelRow:
    """One line of ``modelctl list``."""

    name: str
    short: str
    parameters: str | None
    quantization: str | None
    architecture: str | None
    model_id: str
    digest: Digest
    created: str | None
    size: int
    format: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.name,
            "name": self.short,
            "parameters": self.parameters,
            "quantization": self.quantization,
            "architecture": self.architecture,
            "id": self.model_id,
            "digest": self.digest,
            "created": self.created,
            "size": self.size,
            "format": self.format,
        }


def list_models(config: Config) -> list[ModelRow]:
    store = local.layout(config)
    if not (store.root / "index.json").exists():
        return []
    rows = []
    for name, desc in store.entries():
        try:
            entry = local.load(store, name, desc)
        except (IntegrityError, NotFound):  # one damaged model must not hide the others: verify --repair mends it
            rows.append(_damaged_row(name, desc.digest))
            continue
        model = entry.model
        rows.append(
            ModelRow(
                name=name,
                short=reference.parse(name).short,
                parameters=model.parameters,
                quantization=model.quantization,
                architecture=model.architecture,
                model_id=desc.digest.hex[:12],
                digest=desc.digest,
                created=model.created,
                size=model.size,
                format=model.format,
            )
        )
    return rows


DAMAGED = "damaged"
"""The format shown for a model whose manifest or config is missing or corrupt (``modelctl verify --repair``)."""


def _damaged_row(name: str, digest: Digest) -> ModelRow:
    return ModelRow(
        name=name,
        short=reference.parse(name).short,
        parameters=None,
        quantization=None,
        architecture=None,
        model_id=digest.hex[:12],
        digest=digest,
        created=None,
        size=0,
        format=DAMAGED,
    )


def inspect_local(config: Config, text: str) -> dict[str, Any]:
    store = local.layout(config)
    entry = local.resolve(store, text)
    config_doc = json.loads(store.read_blob(entry.manifest.config.digest))
    files = local.materialise(config, store, entry)
    return describe(entry.name, entry.manifest.digest, json.loads(entry.manifest.raw), config_doc, entry.model) | {
        "files": [str(p) for p in files],
    }


def inspect_remote(config: Config, text: str) -> dict[str, Any]:
    """What the source says about ``text`` without downloading weights: the manifest and config of a registry, the
    files the Hub lists."""
    from modelctl import sources

    ref = reference.parse(text)
    with sources.Sources(config) as found:
        resolved = found.for_reference(ref).resolve()
    if resolved.details is not None:
        return dict(resolved.details)
    manifest = resolved.manifest
    assert manifest is not None, "a source without a manifest describes itself"
    return describe(str(ref), manifest.digest, json.loads(manifest.raw), json.loads(resolved.config), resolved.model)


def describe(name: str, digest: Digest, manifest: Any, config_doc: Any, model: Any) -> dict[str, Any]:
    """The document ``inspect`` prints, local or remote."""
    return {
        "reference": name,
        "id": digest.hex[:12],
        "digest": digest,
        "format": model.format,
        "parameters": model.parameters,
        "quantization": model.quantization,
        "architecture": model.architecture,
        "context_size": model.context_size,
        "size": model.size,
        "created": model.created,
        "gguf": [d.digest for d in model.gguf],
        "manifest": manifest,
        "config": config_doc,
    }


def model_path(config: Config, text: str) -> Path:
    """The first GGUF file of a local model (llama.cpp finds the other shards beside it)."""
    store = local.layout(config)
    entry = local.resolve(store, text)
    files = local.materialise(config, store, entry)
    if not files:
        raise UsageError(f"{entry.name} has no GGUF file", hint="modelctl runs GGUF models only")
    return files[0]


def tag(config: Config, source: str, target: str) -> str:
    store = local.layout(config)
    entry = local.resolve(store, source)
    name = str(reference.parse(target))
    store.tag(name, entry.desc)
    return name


def remove(config: Config, texts: Sequence[str], *, force: bool = False) -> list[str]:
    """Untag each model and delete the blobs no other tag uses. Returns the removed names."""
    store = local.layout(config)
    removed: list[str] = []
    for text in texts:
        matches = local.find(store, text) if (store.root / "index.json").exists() else []
        if not matches:
            if force:
                continue
            raise NotFound(f"model {text} is not in the local store", hint="see: modelctl list")
        if len(matches) > 1 and not force:
            names = ", ".join(n for n, _ in matches)
            raise UsageError(f"{text} matches several tags ({names})", hint="name one, or add --force to remove all")
        for name, desc in matches:
            store.remove(name)
            if desc.digest not in store.root_digests():  # no other entry names the manifest
                local.drop_files(config, desc.digest)
            removed.append(name)
    return removed


@dataclass(frozen=True, kw_only=True, slots=True)
class DiskUsage:
    models: int
    blobs: int
    store_bytes: int
    unreferenced_bytes: int
    partial_bytes: int
    free_bytes: int
    home: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "models": self.models,
            "blobs": self.blobs,
            "store_bytes": self.store_bytes,
            "unreferenced_bytes": self.unreferenced_bytes,
            "partial_bytes": self.partial_bytes,
            "free_bytes": self.free_bytes,
        }


def disk_usage(config: Config) -> DiskUsage:
    store = local.layout(config)
    store.ensure()
    usage = store.disk_usage()
    partial = (
        sum(p.stat().st_size for p in config.ingest_dir.rglob("*") if p.is_file()) if config.ingest_dir.exists() else 0
    )
    return DiskUsage(
        models=usage.models,
        blobs=usage.blobs,
        store_bytes=usage.total_bytes,
        unreferenced_bytes=usage.unreferenced_bytes,
        partial_bytes=partial,
        free_bytes=shutil.disk_usage(config.home).free,
        home=config.home,
    )


def prune(config: Config) -> list[Digest]:
    store = local.layout(config)
    store.ensure()
    removed = store.prune()
    live = {desc.digest.hex for _, desc in store.entries()}  # models/<hex>: 64 digits for sha256, 128 for sha512
    models_dir = config.home / "models"
    if models_dir.exists():
        for child in models_dir.iterdir():
            if child.name not in live:
                shutil.rmtree(child, ignore_errors=True)
    return removed


def _is_hex(name: str) -> bool:
    """A partial's name: the hex of the digest (sha256 or sha512) it will have."""
    return any(_digest.parse(f"{algorithm}:{name}") is not None for algorithm in _digest.HEX_LENGTHS)


@dataclass(frozen=True, slots=True)
class PrunedPartials:
    count: int
    bytes: int
    in_use: int
    """Partials left alone because a pull holds their lock right now."""


def prune_partials(config: Config) -> PrunedPartials:
    """Delete partial downloads (``ingest/<hex>/``, from registries and the Hub; ``ingest/hf/<hex>.partial``, left by
    Hub pulls of earlier versions) that no pull is using. A pull holds the blob's lock in ``ingest/`` while it
    writes, so taking that lock without waiting tells an abandoned partial from a live one; resuming it later is
    what is given up. The lock files of what is deleted go too (and lock files with no partial at all)."""
    import filelock

    from modelctl.transfer import download

    ingest = config.ingest_dir
    found: list[tuple[str, Path | None]] = []
    if ingest.is_dir():
        found += [(c.name, c) for c in ingest.iterdir() if c.is_dir() and _is_hex(c.name)]
        hf = ingest / "hf"
        if hf.is_dir():
            found += [(c.stem, c) for c in hf.iterdir() if c.suffix == ".partial" and _is_hex(c.stem)]
        named = {hex_digest for hex_digest, _ in found}
        found += [  # lock files with no partial (left by earlier versions, or by a pull that failed)
            (c.stem, None) for c in ingest.glob("*.lock") if _is_hex(c.stem) and c.stem not in named
        ]
    count = size = busy = 0
    for hex_digest, path in found:
        lock = filelock.FileLock(str(ingest / f"{hex_digest}.lock"))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            busy += 1 if path is not None else 0
            continue
        try:
            if path is not None:
                files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
                size += sum(f.stat().st_size for f in files)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                count += 1
            download.drop_lock_file(lock)
        finally:
            lock.release()
    return PrunedPartials(count=count, bytes=size, in_use=busy)
