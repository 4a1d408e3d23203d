"""Models in the store by name: opening the store, finding entries by reference or model ID, and the per-model
directory of symlinks llama.cpp loads from.

Blobs in an OCI layout are named by digest, but llama.cpp finds the shards of a split GGUF by file name
(``x-00002-of-00003.gguf`` beside ``x-00001-of-00003.gguf``). So each model gets a directory of symlinks,
``$MODELCTL_HOME/models/<manifest hex>/<file name>``, pointing at its blobs. It is derived state: rebuilt on demand.
Which layer gets which name is the artifact's business (``modelctl.services.local``); this module only links.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from modelctl import reference
from modelctl.config import Config
from modelctl.digest import hex_of
from modelctl.oci.descriptor import Descriptor
from modelctl.store.layout import Layout


def layout(config: Config) -> Layout:
    """The store, its journal of unflushed blobs settled first (after a crash, damaged blobs go before any use)."""
    store = Layout(config.store_dir)
    store.recover_unflushed()
    return store


def find(store: Layout, text: str) -> list[tuple[str, Descriptor]]:
    """Entries matching a reference (normalised first) or a model ID prefix (>= 6 hex digits)."""
    entries = store.entries()
    candidates: list[tuple[str, Descriptor]] = []
    if _looks_like_id(text):
        candidates = store.find_by_digest(text)
        if candidates:
            return candidates
    ref = reference.parse(text)
    exact = [(n, d) for n, d in entries if n == str(ref)]
    if exact:
        return exact
    if ref.digest:
        return [(n, d) for n, d in entries if d.digest == ref.digest and reference.parse(n).name == ref.name]
    return []


def files_dir(config: Config, manifest_digest: str) -> Path:
    return config.home / "models" / hex_of(manifest_digest)


def link_files(store: Layout, target_dir: Path, names: Mapping[str, str]) -> None:
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


def drop_files(config: Config, manifest_digest: str) -> None:
    shutil.rmtree(files_dir(config, manifest_digest), ignore_errors=True)


def _looks_like_id(text: str) -> bool:
    raw = text.removeprefix("sha256:")
    return 6 <= len(raw) <= 64 and all(c in "0123456789abcdef" for c in raw)
