"""A stored model read as an artifact: its manifest and ``artifact.Model``, and the file names of its view.

Finding entries, opening the store and linking the files are the store's (:mod:`modelctl.store.models`, re-exported
here for this module's callers); reading a manifest as a model is ``artifact``'s, which the store may not import
(they are independent siblings in the import-linter layers), so that part stays in this service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelctl import artifact
from modelctl.config import Config
from modelctl.errors import NotFound, UsageError
from modelctl.oci import descriptor
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.store import Layout
from modelctl.store.models import drop_files, files_dir, find, layout, link_files

__all__ = ["LocalModel", "drop_files", "file_names", "files_dir", "find", "layout", "load", "materialise", "resolve"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalModel:
    name: str
    """The stored reference (full normalised form)."""
    desc: Descriptor
    manifest: Manifest
    model: artifact.Model


def load(store: Layout, name: str, desc: Descriptor) -> LocalModel:
    manifest = descriptor.parse(store.read_blob(desc.digest, max_size=4 << 20), desc.media_type)
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
    """Create (or repair) the symlink view of a model; return the GGUF paths in shard order.

    GGUF shards always get llama.cpp's split names (``model-00001-of-00003.gguf``), whatever their annotations say,
    so that llama.cpp finds shard 2 beside shard 1; other layers keep their (sanitised) annotated names.
    """
    target_dir = files_dir(config, local.manifest.digest)
    names = file_names(local)
    link_files(store, target_dir, names)
    return [target_dir / names[d.digest] for d in local.model.gguf]


def file_names(local: LocalModel) -> dict[str, str]:
    """digest -> relative file name inside the model's directory."""
    shards = local.model.gguf
    names: dict[str, str] = {}
    for i, desc in enumerate(shards, start=1):
        names[desc.digest] = "model.gguf" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.gguf"
    taken = set(names.values())
    for index, layer in enumerate(local.manifest.layers):
        if layer.digest in names:
            continue
        name = artifact.file_name(layer, index)
        if name in taken:
            name = f"{index}-{name}"
        names[layer.digest] = name
        taken.add(name)
    return names
