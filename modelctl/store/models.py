"""Models in the store by name: opening the store, finding entries by reference or model ID, and the per-model
directory of symlinks llama.cpp loads from.

Blobs in an OCI layout are named by digest, but llama.cpp finds the shards of a split GGUF by file name
(``x-00002-of-00003.gguf`` beside ``x-00001-of-00003.gguf``). So each model gets a directory of symlinks,
``$MODELCTL_HOME/models/<manifest hex>/<file name>``, pointing at its blobs. It is derived state: rebuilt on demand.
A stored model is read as an artifact (its manifest and ``artifact.Model``): :func:`resolve` finds one by name or
ID, :func:`materialise` names its layers (llama.cpp's split names for GGUF shards) and links them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelctl import artifact, reference
from modelctl.config import Config
from modelctl.digest import HEX_LENGTHS, SHA512, Digest, is_hex_prefix
from modelctl.errors import NotFound, UsageError
from modelctl.oci import descriptor
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.store import unpack
from modelctl.store.layout import Layout


def layout(config: Config) -> Layout:
    """The store, its journal of unflushed blobs settled first (after a crash, damaged blobs go before any use)."""
    store = Layout(config.store_dir)
    store.recover_unflushed()
    return store


def find(store: Layout, text: str) -> list[tuple[str, Descriptor]]:
    """Entries matching a reference (normalised first) or a model ID prefix (>= 6 hex digits)."""
    if _looks_like_id(text):
        candidates = store.find_by_digest(text)
        if candidates:
            return candidates
    ref = reference.parse(text)
    exact = store.resolve(str(ref))  # a look-up by name: no walk of the index (a store of 10,000 models)
    if exact is not None:
        return [(str(ref), exact)]
    if ref.digest:
        return [(n, d) for n, d in store.entries() if d.digest == ref.digest and reference.parse(n).name == ref.name]
    return []


def files_dir(config: Config, manifest_digest: Digest) -> Path:
    return config.home / "models" / Digest(manifest_digest).hex


def link_files(store: Layout, target_dir: Path, names: Mapping[Digest, str]) -> None:
    """Create (or repair) ``target_dir/<name>`` -> the blob, for each digest -> relative file name."""
    for digest, name in names.items():
        link = target_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        blob = store.blob_path(digest)
        if not (link.is_symlink() and Path(os.readlink(link)) == blob):
            tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(blob)
            os.replace(tmp, link)


def drop_files(config: Config, manifest_digest: Digest) -> None:
    shutil.rmtree(files_dir(config, manifest_digest), ignore_errors=True)


def _looks_like_id(text: str) -> bool:
    algorithm, _, raw = text.rpartition(":")
    if algorithm and algorithm not in HEX_LENGTHS:
        return False
    return len(raw) >= 6 and is_hex_prefix(raw, algorithm or SHA512)


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalModel:
    name: str
    """The stored reference (full normalised form)."""
    desc: Descriptor
    manifest: Manifest
    model: artifact.Model


def load(store: Layout, name: str, desc: Descriptor) -> LocalModel:
    raw = store.read_blob(desc.digest, max_size=4 << 20)
    manifest = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
    if not isinstance(manifest, Manifest):
        raise UsageError(f"{name} is an index, not a model manifest")
    config_bytes = store.read_blob(manifest.config.digest)
    return LocalModel(name=name, desc=desc, manifest=manifest, model=artifact.from_manifest(manifest, config_bytes))


def resolve(store: Layout, text: str) -> LocalModel:
    """The one local model ``text`` names; NotFound (exit 3) with the pull hint otherwise."""
    matches = find(store, text)
    if not matches:
        raise NotFound(f"model {text} is not in the local store", hint=f"run: modelctl pull {text}")
    digests = {d.digest for _, d in matches}
    if len(digests) > 1:
        raise UsageError(f"{text} matches several models", hint="give more of the model ID or the full reference")
    name, desc = matches[0]
    return load(store, name, desc)


def materialise(config: Config, store: Layout, local: LocalModel) -> list[Path]:
    """Create (or repair) the symlink view of a model (a model image's files unpacked instead, see
    :mod:`modelctl.store.unpack`); return the GGUF paths in shard order.

    GGUF shards always get llama.cpp's split names (``model-00001-of-00003.gguf``), whatever their annotations say,
    so that llama.cpp finds shard 2 beside shard 1; other layers keep their (sanitised) annotated names.
    """
    target_dir = files_dir(config, local.manifest.digest)
    names = file_names(local)
    packed = local.model.packed  # a model image's files sit inside tar layers: copied out, not linked
    link_files(store, target_dir, {d: n for d, n in names.items() if d not in packed})
    for digest, file in packed.items():
        unpack.unpack(store, file, target_dir / names[digest])
    return [target_dir / names[d.digest] for d in local.model.gguf]


def file_names(local: LocalModel) -> dict[Digest, str]:
    """digest -> relative file name inside the model's directory."""
    shards = local.model.gguf
    names: dict[Digest, str] = {}
    for i, desc in enumerate(shards, start=1):
        names[desc.digest] = "model.gguf" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.gguf"
    taken = set(names.values())
    for index, layer in enumerate(local.manifest.layers):
        if layer.digest in names or not layer.distributable:
            continue
        name = artifact.file_name(layer, index)
        if name in taken:
            name = f"{index}-{name}"
        names[layer.digest] = name
        taken.add(name)
    return names
