"""Flat cost at fleet scale: a command reads ``index.json`` once and writes it at most once, whatever the number of
references; the kept index follows other writers; a batch keeps what completed. Spies count reads and writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelctl import digest, reference
from modelctl.config import from_env
from modelctl.errors import NotFound
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services import pull as pull_service
from modelctl.store import Layout
from modelctl.store.directory import Directory
from modelctl.store.index import Tags

COUNT = 300


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest.of_bytes(data), "size": len(data)}


def put_model(store: Layout, i: int) -> Descriptor:
    """A tiny model's blobs (a distinct GGUF layer, a config, the manifest); its manifest descriptor, untagged."""
    layer, config = b"GGUF" + i.to_bytes(4, "little"), b'{"config":{"format":"gguf"}}'
    store.write_blob(layer)
    store.write_blob(config)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.DOCKER_MODEL_CONFIG_V01, config),
        "layers": [_desc(mt.DOCKER_GGUF, layer)],
    }
    raw = json.dumps(doc).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write_blob(raw), size=len(raw))


def name(i: int) -> str:
    return f"docker.io/team{i % 10}/model-{i:06d}:1"


@dataclass
class Spy:
    parses: int = 0
    index_writes: int = 0


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    """Counts full reads of ``index.json`` (parse and validation) and atomic writes of it, in every store object."""
    counts = Spy()
    parse, write = Tags._parse, Directory.write_atomic

    def counting_parse(self: Tags, *args: Any) -> Any:
        counts.parses += 1
        return parse(self, *args)

    def counting_write(self: Directory, target: Path, data: bytes) -> None:
        counts.index_writes += target == self.index_path
        write(self, target, data)

    monkeypatch.setattr(Tags, "_parse", counting_parse)
    monkeypatch.setattr(Directory, "write_atomic", counting_write)
    yield counts


def test_many_tags_are_one_read_and_one_write(store: Layout, spy: Spy) -> None:
    descs = [put_model(store, i) for i in range(COUNT)]
    spy.parses = spy.index_writes = 0
    store.tag_many((name(i), d) for i, d in enumerate(descs))
    assert (spy.parses, spy.index_writes) == (1, 1)  # before: 300 reads, 300 writes, 91,200 descriptor parses
    for i, d in enumerate(descs):  # look-ups use the index this object wrote: no read back
        assert store.resolve(name(i)) == Descriptor(
            media_type=d.media_type, digest=d.digest, size=d.size, annotations={mt.REF_NAME: name(i)}
        )
    assert len(store.entries()) == COUNT and spy.parses == 1
    assert [n for n, _ in Layout(store.root).entries()] == [name(i) for i in range(COUNT)]
    store.tag_many((name(i), d) for i, d in enumerate(descs))  # nothing changes: no write at all
    assert spy.index_writes == 1


def test_a_batch_is_seen_at_once_and_written_once(store: Layout, spy: Spy) -> None:
    descs = [put_model(store, i) for i in range(COUNT)]
    fresh = Layout(store.root)
    spy.parses = spy.index_writes = 0
    with fresh.batch():
        for i, d in enumerate(descs):
            fresh.tag(name(i), d)
            assert fresh.resolve(name(i)) is not None  # this command's own reads see its pending tags
        assert spy.index_writes == 0
        assert len(fresh.entries()) == COUNT and len(fresh.roots()) == COUNT
    assert (spy.parses, spy.index_writes) == (1, 1)
    assert len(Layout(store.root).entries()) == COUNT


def test_the_kept_index_follows_another_writer(store: Layout) -> None:
    first, second = put_model(store, 1), put_model(store, 2)
    store.tag(name(1), first)
    assert store.resolve(name(2)) is None
    Layout(store.root).tag(name(2), second)  # another process's write (a rename: a new inode)
    assert store.resolve(name(2)) is not None
    doc = json.loads(store.index_path.read_bytes())
    doc["manifests"] = [m for m in doc["manifests"] if m["annotations"][mt.REF_NAME] != name(1)]
    tmp = store.root / "edited.json"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, store.index_path)  # another tool rewrote it
    assert store.resolve(name(1)) is None
    store.tag(name(1), first)  # a write starts from the file as it is now: the other tool's edit is kept
    assert sorted(n for n, _ in Layout(store.root).entries()) == [name(1), name(2)]


def test_a_batch_that_fails_keeps_what_completed(store: Layout) -> None:
    done = put_model(store, 1)
    with pytest.raises(KeyboardInterrupt), store.batch():
        store.tag(name(1), done)
        raise KeyboardInterrupt
    assert Layout(store.root).resolve(name(1)) is not None


def test_an_incomplete_model_is_not_tagged_the_others_are(store: Layout) -> None:
    good, bad = put_model(store, 1), put_model(store, 2)
    store.blob_path(digest.of_bytes(b"GGUF" + (2).to_bytes(4, "little"))).unlink()
    with pytest.raises(NotFound, match="of its manifest is missing"):
        store.tag_many([(name(2), bad), (name(1), good)])
    assert [n for n, _ in Layout(store.root).entries()] == [name(1)]


class Quiet:
    """A pull reporter that shows nothing."""

    def resolved(self, *args: object) -> None: ...
    def progress(self, *args: object) -> None: ...
    def warning(self, message: str) -> None: ...


def test_a_locked_pull_of_300_present_models_reads_and_writes_the_index_once(spy: Spy) -> None:
    """``pull --locked`` of models whose blobs are all present (no network): 300 new tags, one read, one write."""
    config = from_env()
    store = Layout(config.store_dir)
    store.ensure()
    refs = [reference.parse(name(i)).with_digest(put_model(store, i).digest) for i in range(COUNT)]
    spy.parses = spy.index_writes = 0
    results = pull_service.pull(config, refs, Quiet())
    assert [r.reference for r in results] == [name(i) for i in range(COUNT)]
    assert (spy.parses, spy.index_writes) == (1, 1)
    assert len(Layout(config.store_dir).entries()) == COUNT
    spy.parses = spy.index_writes = 0
    pull_service.pull(config, refs, Quiet())  # all tagged already: one read, nothing to write
    assert (spy.parses, spy.index_writes) == (1, 0)
