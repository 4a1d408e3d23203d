"""Tags: ``index.json``, one entry per full reference, rewritten atomically under the store's lock."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from modelctl import digest as _digest
from modelctl.errors import IntegrityError, InvalidReference, NotFound
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import graph
from modelctl.store.blobs import Blobs
from modelctl.store.directory import EMPTY_INDEX, stored

MAX_NAME = 1024


class Tags(Blobs):
    """The layout's index: names (full references in ``org.opencontainers.image.ref.name``) -> manifests."""

    def tag(self, name: str, desc: Descriptor) -> None:
        """Point ``name`` at manifest ``desc`` (replacing its previous target); the model must be complete."""
        _check_name(name)
        stored(desc.digest)
        if not desc.media_type or _has_control(desc.media_type):
            raise IntegrityError(f"malformed media type {desc.media_type!r} for {name}")
        entry = Descriptor(
            media_type=desc.media_type,
            digest=desc.digest,
            size=desc.size,
            annotations={**desc.annotations, mt.REF_NAME: name},
            artifact_type=desc.artifact_type,
            platform=desc.platform,
        ).to_json()
        self.ensure()
        with self.locked():
            self._check_complete(name, desc)
            doc = self._load_index()
            manifests: list[Any] = doc["manifests"]
            positions = [i for i, item in enumerate(manifests) if _ref_name(item) == name]
            if positions and len(positions) == 1 and manifests[positions[0]] == entry:
                return
            if positions:
                manifests[positions[0]] = entry
                for i in reversed(positions[1:]):
                    del manifests[i]
            else:
                manifests.append(entry)
            self._save_index(doc)

    def untag(self, name: str) -> Descriptor | None:
        """Drop ``name`` from the index; return the descriptor it pointed at (None if absent). Keeps blobs."""
        with self.locked():
            doc = self._load_index()
            manifests: list[Any] = doc["manifests"]
            found = [item for item in manifests if _ref_name(item) == name]
            if not found:
                return None
            doc["manifests"] = [item for item in manifests if _ref_name(item) != name]
            self._save_index(doc)
            return Descriptor.from_json(found[0], where="index.json entry")

    def resolve(self, name: str) -> Descriptor | None:
        for entry_name, desc in self.entries():
            if entry_name == name:
                return desc
        return None

    def entries(self) -> list[tuple[str, Descriptor]]:
        """(name, manifest descriptor) of every tagged entry, in index order; untagged entries are skipped."""
        out: list[tuple[str, Descriptor]] = []
        for item in self._load_index()["manifests"]:
            name = _ref_name(item)
            if name is not None:
                out.append((name, Descriptor.from_json(item, where="index.json entry")))
        return out

    def find_by_digest(self, prefix: str) -> list[tuple[str, Descriptor]]:
        """Entries whose manifest digest starts with ``prefix``: a model ID (``3f8eb4da87fa``) or a digest."""
        algorithm, colon, hex_prefix = prefix.rpartition(":")
        if colon and algorithm not in _digest.HEX_LENGTHS:
            return []
        if not _digest.is_hex_prefix(hex_prefix, algorithm or _digest.SHA512):
            return []
        return [
            (n, d)
            for n, d in self.entries()
            if (not algorithm or d.digest.algorithm == algorithm) and d.digest.hex.startswith(hex_prefix)
        ]

    def roots(self) -> list[Descriptor]:
        """Every index entry, tagged or not (entries written by other tools count too): where the graph starts."""
        items = self._load_index()["manifests"]
        return [Descriptor.from_json(item, where="index.json entry") for item in items]

    def _check_complete(self, name: str, desc: Descriptor) -> None:
        if not self.has_blob(desc.digest, desc.size):
            raise NotFound(
                f"cannot tag {name}: manifest {desc.digest} ({desc.size} bytes) is not in the local store",
                hint="write the manifest blob before tagging it",
            )
        raw = self.read_blob(desc.digest, max_size=graph.MAX_MANIFEST)
        doc = descriptor.parse(raw, desc.media_type, algorithm=desc.digest.algorithm)
        if isinstance(doc, descriptor.Manifest):
            for child in graph.children(doc):
                if not self.has_blob(child.digest, child.size):
                    raise NotFound(
                        f"cannot tag {name}: blob {child.digest} of its manifest is missing",
                        hint=f"run: modelctl pull {name}",
                    )

    def _load_index(self) -> dict[str, Any]:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            empty: dict[str, Any] = json.loads(EMPTY_INDEX)
            return empty
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise IntegrityError(
                f"malformed {self.index_path}: not an OCI image index",
                hint="restore it from a backup, or move the store aside and pull again",
            )
        for item in doc["manifests"]:
            Descriptor.from_json(item, where=f"entry of {self.index_path}")
            if not isinstance(item.get("annotations", {}), dict):
                raise IntegrityError(f"malformed entry of {self.index_path}: annotations must be an object")
        return doc

    def _save_index(self, doc: dict[str, Any]) -> None:
        self.write_atomic(self.index_path, json.dumps(doc, separators=(",", ":")).encode())


def _ref_name(item: Any) -> str | None:
    annotations = item.get("annotations") if isinstance(item, dict) else None
    name = annotations.get(mt.REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c.isspace() for c in text)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or _has_control(name):
        raise InvalidReference(
            f"invalid model name {name!r} for the local store",
            hint="use a full reference without spaces or control characters",
        )
