"""The reference index (``.refs.db``): removing a model walks up from its own blobs, each blob is read once in the
store's life, and nothing another model (or a model card attached to one) needs is ever deleted, even when the index
missed a blob or ``index.json`` was written by another tool."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelctl import digest
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout, graph
from modelctl.store.refs import Refs


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest.of_bytes(data), "size": len(data)}


def put_manifest(
    store: Layout, *layers: bytes, config: bytes = b'{"config":{"format":"gguf"}}', **extra: Any
) -> Descriptor:
    for blob in (config, *layers):
        store.write_blob(blob)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.DOCKER_MODEL_CONFIG_V01, config),
        "layers": [_desc(mt.DOCKER_GGUF, layer) for layer in layers],
        **extra,
    }
    raw = json.dumps(doc).encode()
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write_blob(raw), size=len(raw))


def put_card(store: Layout, subject: Descriptor, text: bytes) -> Descriptor:
    """A model card attached to ``subject`` (a referrer, as ``package --card`` writes one)."""
    return put_manifest(store, text, config=b"{}", subject=subject.to_json(), artifactType="text/markdown")


def present(store: Layout, *blobs: bytes | Descriptor) -> list[bool]:
    return [store.has_blob(b.digest if isinstance(b, Descriptor) else digest.of_bytes(b)) for b in blobs]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every blob the store reads to learn what it is."""
    seen: list[Path] = []
    read_node = graph.read_node

    def counting(d: digest.Digest, path: Path) -> Any:
        seen.append(path)
        return read_node(d, path)

    monkeypatch.setattr(graph, "read_node", counting)
    return seen


def test_each_blob_is_read_once_in_the_stores_life(store: Layout, reads: list[Path]) -> None:
    descs = [put_manifest(store, b"GGUF" + i.to_bytes(4, "little")) for i in range(50)]
    store.tag_many((f"docker.io/ai/m{i}:1", d) for i, d in enumerate(descs))
    assert set(store._scan()) == {d.digest for d in descs}
    assert len(reads) == 101  # 50 GGUFs, 50 manifests, one config shared by all
    reads.clear()
    store.remove("docker.io/ai/m0:1")
    assert reads == []  # everything was known, and blobs/ was not listed again
    assert store.prune(grace_seconds=0) == []
    assert reads == []
    assert set(store._scan()) == {d.digest for d in descs[1:]}
    assert Layout(store.root).remove("docker.io/ai/m1:1")  # a new process: the index is on disk
    assert reads == []


def test_remove_keeps_what_another_model_or_tag_needs(store: Layout) -> None:
    shared, own_a, own_b = b"GGUF shared", b"GGUF a", b"GGUF b"
    a = put_manifest(store, shared, own_a)
    b = put_manifest(store, shared, own_b)
    store.tag_many([("docker.io/ai/a:1", a), ("docker.io/ai/a:alias", a), ("docker.io/ai/b:1", b)])
    assert store.remove("docker.io/ai/a:1") == []  # another tag names the same manifest
    deleted = store.remove("docker.io/ai/a:alias")
    assert set(deleted) == {a.digest, digest.of_bytes(own_a)}
    assert present(store, shared, own_b, b, own_a, a) == [True, True, True, False, False]
    store.remove("docker.io/ai/b:1")
    assert present(store, shared, own_b, b) == [False, False, False]
    assert store.prune(grace_seconds=0) == []  # nothing was left behind


def test_a_card_goes_with_its_model_and_keeps_what_it_points_at(store: Layout) -> None:
    text = b"# shared card text"
    a = put_manifest(store, b"GGUF a")
    b = put_manifest(store, b"GGUF b")
    card_a, card_b = put_card(store, a, text), put_card(store, b, text)
    store.tag_many([("docker.io/ai/a:1", a), ("docker.io/ai/b:1", b)])
    assert [d.digest for d in store.referrers(a.digest)] == [card_a.digest]
    deleted = store.remove("docker.io/ai/a:1")
    assert card_a.digest in deleted and digest.of_bytes(text) not in deleted  # b's card needs the text
    assert present(store, card_b, text, b) == [True, True, True]


def test_a_blob_the_index_missed_is_read_before_anything_is_deleted(store: Layout) -> None:
    """A manifest the index does not know (it arrived in the same clock tick as the last listing, or another tool
    wrote it and tagged it in index.json) still protects its layers."""
    shared = b"GGUF shared"
    a = put_manifest(store, shared, b"GGUF a")
    store.tag("docker.io/ai/a:1", a)
    assert store._scan()  # the index now knows the store as it is
    b = put_manifest(store, shared, b"GGUF b")
    with sqlite3.connect(store.refs_path) as db:  # make the index miss b, with blobs/ unchanged since its listing
        db.execute("DELETE FROM blobs WHERE digest = ?", (b.digest,))
        db.execute("DELETE FROM edges WHERE parent = ?", (b.digest,))
        now = Refs(None, store.blobs_dir)
        now.sync()
        for key, value in now._db.execute("SELECT key, value FROM meta"):
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
    raw = json.loads(store.index_path.read_bytes())  # another tool tags b
    raw["manifests"].append({**b.to_json(), "annotations": {mt.REF_NAME: "docker.io/ai/b:1"}})
    store.index_path.write_text(json.dumps(raw))
    store.remove("docker.io/ai/a:1")
    assert present(store, shared, b) == [True, True]


def test_a_blob_that_does_not_match_its_digest_is_not_remembered(store: Layout) -> None:
    """A damaged manifest (bit rot) reads as no document; once pulled again it must count, or gc would take its
    layers: only what was read from a blob matching its digest is kept."""
    desc = put_manifest(store, b"GGUF 1")
    path = store.blob_path(desc.digest)
    good = path.read_bytes()
    path.write_bytes(b"x" * len(good))
    assert desc.digest not in store._scan()
    path.write_bytes(good)
    assert desc.digest in store._scan()


@pytest.mark.parametrize("damage", [b"not a database at all, " * 100, b"", "version"])
def test_a_damaged_or_foreign_index_is_rebuilt(store: Layout, damage: bytes | str) -> None:
    descs = [put_manifest(store, b"GGUF" + bytes([i])) for i in range(3)]
    expected = graph.scan(store.blobs_dir)
    assert store._scan() == expected
    if damage == "version":
        with sqlite3.connect(store.refs_path) as db:
            db.execute("PRAGMA user_version = 99")
    else:
        assert isinstance(damage, bytes)
        store.refs_path.write_bytes(damage)
    assert store._scan() == expected
    assert set(expected) == {d.digest for d in descs}


def test_the_json_cache_it_replaced_is_removed(store: Layout) -> None:
    old = store.root / ".graph.json"
    old.write_text("{}")
    store.prune(grace_seconds=0)
    assert not old.exists() and store.refs_path.is_file()


def test_an_index_in_memory_answers_the_same(store: Layout) -> None:
    """Where the store cannot be written (a read-only mount), the index lives in memory for the command."""
    desc = put_manifest(store, b"GGUF 1")
    with Refs(None, store.blobs_dir) as refs:
        refs.sync()
        assert set(refs.nodes()) == {desc.digest}
        assert refs.reach(desc.digest) == {desc.digest, *(c.digest for c in refs.nodes()[desc.digest].children)}


def test_a_full_disk_while_the_index_is_written_is_exit_8_and_loses_nothing(store: Layout) -> None:
    """SQLite's own SQLITE_FULL (a page limit stands in for the disk): the command ends as out of space (exit 8, the
    contract's code for a full disk), not as an unexpected error, and the index and the blobs are as they were."""
    from modelctl.errors import NoSpace

    kept = put_manifest(store, b"GGUF kept")
    store.tag("docker.io/ai/kept:1", kept)
    before = set(store._scan())
    for i in range(200):
        put_manifest(store, b"GGUF new %d" % i)  # unknown to the index: learning them writes rows
    with pytest.raises(NoSpace) as caught, store.refs() as refs:
        pages = refs._db.execute("PRAGMA page_count").fetchone()[0]
        refs._db.execute(f"PRAGMA max_page_count = {pages}")
        refs.sync(full=True)
    assert caught.value.exit_code == 8 and "free disk space" in (caught.value.hint or "")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert before <= set(store._scan())  # reopened without the limit: the index still answers, nothing was lost
    assert store.has_blob(kept.digest)
