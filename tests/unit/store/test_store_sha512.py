"""The store with sha512 blobs (``blobs/sha512/<hex>``) beside sha256 ones: commit, has, read, tag, gc, journal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl import digest
from modelctl.errors import DigestMismatch, IntegrityError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout
from modelctl.store import journal as unflushed
from modelctl.store.directory import blob_files

NAME = "registry.example/ai/tiny:sha512"
SHA512 = digest.SHA512


def of512(data: bytes) -> digest.Digest:
    return digest.of_bytes(data, SHA512)


def put_model(store: Layout, layers: list[bytes], *, manifest_algorithm: str = SHA512) -> Descriptor:
    """A model whose layers are named by sha512 (the config by sha256), its manifest stored under
    ``manifest_algorithm``; the manifest descriptor, untagged."""
    config = b'{"config":{"format":"gguf"}}'
    store.write_blob(config)
    for layer in layers:
        store.write_blob(layer, of512(layer))
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": digest.of_bytes(config), "size": len(config)},
        "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": of512(b), "size": len(b)} for b in layers],
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    d = digest.of_bytes(raw, manifest_algorithm)
    store.write_blob(raw, d)
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=d, size=len(raw))


def stored(store: Layout) -> set[str]:
    return {d for d, _ in blob_files(store.blobs_dir)}


def test_write_has_read_a_sha512_blob(store: Layout) -> None:
    d = of512(b"weights")
    assert store.write_blob(b"weights", d) == d
    path = store.blob_path(d)
    assert path == store.root / "blobs" / "sha512" / d.hex and path.is_file()
    assert store.has_blob(d) and store.has_blob(d, 7) and not store.has_blob(d, 8)
    assert not store.has_blob(digest.of_bytes(b"weights"))  # the sha256 name is another blob
    assert store.read_blob(d) == b"weights"
    assert store.write_blob(b"weights", d) == d  # idempotent
    assert stored(store) == {d}


def test_write_without_a_digest_stays_sha256(store: Layout) -> None:
    d = store.write_blob(b"ours")
    assert d.algorithm == "sha256" and store.blob_path(d).parent.name == "sha256"
    assert not (store.root / "blobs" / "sha512").exists()


def test_a_sha512_mismatch_stores_nothing(store: Layout) -> None:
    with pytest.raises(DigestMismatch):
        store.write_blob(b"hello", of512(b"other"))
    assert stored(store) == set()


def test_a_corrupt_sha512_blob_is_verified_with_sha512_and_removed(store: Layout) -> None:
    d = store.write_blob(b"x" * 100, of512(b"x" * 100))
    store.blob_path(d).write_bytes(b"y" * 100)
    with pytest.raises(DigestMismatch):
        store.read_blob(d)
    assert not store.has_blob(d)


def test_commit_a_sha512_blob(store: Layout, tmp_path: Path) -> None:
    src = tmp_path / "part"
    src.write_bytes(b"layer bytes")
    d = of512(b"layer bytes")
    path = store.commit_blob(src, d)
    assert path == store.root / "blobs" / "sha512" / d.hex and not src.exists()
    assert store.read_blob(d) == b"layer bytes"


def test_an_unflushed_sha512_blob_is_rehashed_with_sha512_after_a_reboot(
    store: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa\n")
    monkeypatch.setattr(unflushed, "BOOT_ID_PATH", boot)
    good, bad = of512(b"good"), of512(b"bad!")
    for data, d in ((b"good", good), (b"bad!", bad)):
        src = store.root / ".tmp" / f"in-{os.urandom(4).hex()}"
        src.write_bytes(data)
        store.commit_blob(src, d, flush=False)
    store.blob_path(bad).write_bytes(b"lost")  # same size, other bytes: only the hash tells
    boot.write_text("22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb\n")
    assert store.recover_unflushed() == [bad]
    assert store.has_blob(good) and not store.has_blob(bad)
    assert not (store.root / unflushed.JOURNAL).exists()


@pytest.mark.parametrize("manifest_algorithm", ["sha256", "sha512"])
def test_tag_walk_and_remove_a_sha512_model(store: Layout, manifest_algorithm: str) -> None:
    keep = put_model(store, [b"shared", b"kept"], manifest_algorithm="sha256")
    gone = put_model(store, [b"shared", b"only mine"], manifest_algorithm=manifest_algorithm)
    store.tag("registry.example/ai/keep:1", keep)
    store.tag(NAME, gone)
    assert dict(store.entries())[NAME].digest == gone.digest
    walked = {step.desc.digest for step in store.walk([gone])}
    config = digest.of_bytes(b'{"config":{"format":"gguf"}}')
    assert walked == {gone.digest, config, of512(b"shared"), of512(b"only mine")}
    deleted = store.remove(NAME)
    assert set(deleted) == {gone.digest, of512(b"only mine")}
    assert store.has_blob(of512(b"shared")) and store.has_blob(keep.digest)


def test_prune_and_disk_usage_see_both_algorithms(store: Layout) -> None:
    live = put_model(store, [b"live layer"])
    store.tag(NAME, live)
    orphan512 = store.write_blob(b"orphan", of512(b"orphan"))
    orphan256 = store.write_blob(b"orphan")
    usage = store.disk_usage()
    assert usage.blobs == 5 and usage.unreferenced_bytes == 12
    assert store.prune(grace_seconds=3600) == []  # too young
    old = time.time() - 7200
    for d in (orphan512, orphan256):
        os.utime(store.blob_path(d), (old, old))
    assert set(store.prune(grace_seconds=3600)) == {orphan512, orphan256}
    assert store.has_blob(live.digest) and store.has_blob(of512(b"live layer"))
    assert store.disk_usage().unreferenced_bytes == 0


def test_gc_ignores_files_that_are_not_blob_names(store: Layout) -> None:
    (store.root / "blobs" / "sha512").mkdir()
    stray = [store.root / "blobs" / "sha512" / ("a" * 64), store.root / "blobs" / "sha384" / ("a" * 96)]
    stray[1].parent.mkdir()
    for path in stray:
        path.write_bytes(b"x")
        os.utime(path, (1, 1))
    assert store.prune(grace_seconds=0) == [] and all(p.exists() for p in stray)
    assert store.disk_usage().blobs == 0


def test_find_by_digest_with_either_algorithm(store: Layout) -> None:
    desc = put_model(store, [b"w"])
    store.tag(NAME, desc)
    assert [n for n, _ in store.find_by_digest(desc.digest)] == [NAME]
    assert [n for n, _ in store.find_by_digest(desc.digest.hex[:12])] == [NAME]
    assert [n for n, _ in store.find_by_digest(f"sha512:{desc.digest.hex[:12]}")] == [NAME]
    assert store.find_by_digest(f"sha256:{desc.digest.hex[:12]}") == []
    assert store.find_by_digest(f"md5:{desc.digest.hex[:12]}") == []


@pytest.mark.parametrize(
    "bad",
    ["sha512:" + "a" * 127, "sha512:" + "A" * 128, "sha512:" + "a" * 126 + "/.", "sha512:" + "a" * 128 + "\n"],
)
def test_hostile_sha512_digests_never_build_a_path(store: Layout, bad: str) -> None:
    with pytest.raises(IntegrityError):
        store.blob_path(bad)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        store.write_blob(b"x", bad)  # type: ignore[arg-type]
    assert stored(store) == set()


@given(
    text=st.one_of(
        st.text(max_size=140),
        st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(["sha256", "sha512", "sha384", ""]), st.text(max_size=130)),
        st.builds(lambda h: f"sha512:{h}", st.text(alphabet="0123456789abcdef./", min_size=126, max_size=130)),
    )
)
def test_blob_paths_never_escape_their_algorithm_directory(text: str) -> None:
    layout = Layout(Path("/nonexistent/store"))
    try:
        path = layout.blob_path(text)  # type: ignore[arg-type]
    except IntegrityError:
        return
    assert path.parent in {layout.root / "blobs" / "sha256", layout.root / "blobs" / "sha512"}
    assert f"{path.parent.name}:{path.name}" == text
