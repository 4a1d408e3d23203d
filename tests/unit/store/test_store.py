"""The local store (an OCI image layout): blobs, tags, removal, prune, concurrency, and skopeo reading it."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from modelctl import digest
from modelctl.errors import DigestMismatch, IntegrityError, InvalidReference, NotFound
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import EMPTY_INDEX, LAYOUT_VERSION, Layout
from modelctl.store.directory import blob_files

NAME = "docker.io/ai/smollm2:135M-Q4_1"


def _desc(media_type: str, data: bytes, **annotations: str) -> dict[str, object]:
    out: dict[str, object] = {"mediaType": media_type, "digest": digest.of_bytes(data), "size": len(data)}
    if annotations:
        out["annotations"] = annotations
    return out


def put_model(
    store: Layout,
    layers: list[bytes],
    *,
    config: bytes = b'{"config":{"format":"gguf"}}',
    subject: Descriptor | None = None,
) -> Descriptor:
    """Write config, layers and manifest blobs; return the manifest descriptor (not tagged)."""
    for blob in [config, *layers]:
        store.write_blob(blob)
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.DOCKER_MODEL_CONFIG_V01, config),
        "layers": [_desc(mt.DOCKER_GGUF if i == 0 else mt.DOCKER_LICENSE, b) for i, b in enumerate(layers)],
    }
    if subject is not None:
        doc["subject"] = subject.to_json()
        doc["artifactType"] = mt.MODEL_CARD_ARTIFACT
    raw = json.dumps(doc, separators=(",", ":")).encode()
    store.write_blob(raw)
    return Descriptor(media_type=mt.OCI_MANIFEST, digest=digest.of_bytes(raw), size=len(raw))


def blobs(store: Layout) -> set[str]:
    return {d for d, _ in blob_files(store.blobs_dir)}


# -- layout and blobs ----------------------------------------------------------------------------------------


def test_ensure_writes_the_spec_files_and_is_idempotent(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "s")
    assert not (tmp_path / "s").exists()  # no work in __init__
    layout.ensure()
    assert (tmp_path / "s" / "oci-layout").read_bytes() == LAYOUT_VERSION
    assert json.loads((tmp_path / "s" / "index.json").read_bytes()) == json.loads(EMPTY_INDEX)
    assert (tmp_path / "s" / "blobs" / "sha256").is_dir()
    before = (tmp_path / "s" / "index.json").stat().st_mtime_ns
    layout.ensure()
    assert (tmp_path / "s" / "index.json").stat().st_mtime_ns == before


def test_ensure_from_many_threads_at_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            Layout(tmp_path / "s").ensure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Layout(tmp_path / "s").entries() == []


def test_blob_round_trip(store: Layout) -> None:
    d = store.write_blob(b"hello")
    assert d == digest.of_bytes(b"hello")
    assert store.has_blob(d) and store.has_blob(d, 5) and not store.has_blob(d, 6)
    assert store.read_blob(d) == b"hello"
    assert store.blob_path(d) == store.root / "blobs" / "sha256" / d.hex
    assert store.write_blob(b"hello", d) == d  # idempotent
    assert not list((store.root / ".tmp").iterdir())


def test_write_blob_verifies_the_given_digest(store: Layout) -> None:
    with pytest.raises(DigestMismatch):
        store.write_blob(b"hello", digest.of_bytes(b"other"))
    assert blobs(store) == set()


def test_read_blob_missing_too_big_and_corrupt(store: Layout) -> None:
    with pytest.raises(NotFound):
        store.read_blob(digest.of_bytes(b"absent"))
    d = store.write_blob(b"x" * 100)
    with pytest.raises(IntegrityError, match="more than"):
        store.read_blob(d, max_size=10)
    store.blob_path(d).write_bytes(b"y" * 100)  # bit rot
    with pytest.raises(DigestMismatch) as info:
        store.read_blob(d)
    assert "removed" in str(info.value)
    assert not store.has_blob(d)  # so the next pull fetches it again


def test_commit_blob_moves_a_verified_file(store: Layout, tmp_path: Path) -> None:
    ingest = tmp_path / "ingest" / "part"
    ingest.parent.mkdir()
    ingest.write_bytes(b"weights")
    os.utime(ingest, (1, 1))
    d = digest.of_bytes(b"weights")
    path = store.commit_blob(ingest, d)
    assert path == store.blob_path(d) and not ingest.exists()
    assert store.read_blob(d) == b"weights"
    assert path.stat().st_mtime > time.time() - 60  # the age prune() sees starts at the commit


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:../../../../etc/passwd",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 64 + "/../x",
        "sha512:" + "a" * 64,
        "sha512:" + "a" * 127 + "/",
        "sha512:../" + "a" * 125,
        "sha384:" + "a" * 96,
        "../" + "a" * 64,
        "a" * 64,
        "",
        "sha256:" + "a" * 64 + "\n",
    ],
)
def test_hostile_digests_never_build_a_path(store: Layout, bad: str) -> None:
    with pytest.raises(IntegrityError):
        store.blob_path(bad)
    with pytest.raises(IntegrityError):
        store.has_blob(bad)
    with pytest.raises(IntegrityError):
        store.read_blob(bad)
    with pytest.raises(IntegrityError):
        store.write_blob(b"x", bad)
    with pytest.raises(IntegrityError):
        store.tag(NAME, Descriptor(media_type=mt.OCI_MANIFEST, digest=bad, size=1))
    assert store.entries() == []


# -- tags ----------------------------------------------------------------------------------------------------


def test_tag_resolve_untag(store: Layout) -> None:
    a = put_model(store, [b"A-weights", b"license"])
    b = put_model(store, [b"B-weights", b"license"])
    store.tag(NAME, a)
    store.tag("docker.io/ai/other:latest", b)
    resolved = store.resolve(NAME)
    assert resolved is not None and resolved.digest == a.digest and resolved.size == a.size
    assert resolved.annotations[mt.REF_NAME] == NAME
    assert [n for n, _ in store.entries()] == [NAME, "docker.io/ai/other:latest"]
    store.tag(NAME, b)  # retag replaces in place: one entry per name, order kept
    assert [(n, d.digest) for n, d in store.entries()] == [
        (NAME, b.digest),
        ("docker.io/ai/other:latest", b.digest),
    ]
    store.tag(NAME, b)  # no-op
    assert len(store.entries()) == 2
    removed = store.untag(NAME)
    assert removed is not None and removed.digest == b.digest
    assert store.resolve(NAME) is None and store.untag(NAME) is None
    assert store.has_blob(b.digest)  # untag keeps blobs


def test_tag_refuses_incomplete_models(store: Layout) -> None:
    missing = Descriptor(media_type=mt.OCI_MANIFEST, digest=digest.of_bytes(b"nope"), size=4)
    with pytest.raises(NotFound):
        store.tag(NAME, missing)
    a = put_model(store, [b"weights"])
    with pytest.raises(NotFound):  # wrong size
        store.tag(NAME, Descriptor(media_type=a.media_type, digest=a.digest, size=a.size + 1))
    store.blob_path(digest.of_bytes(b"weights")).unlink()
    with pytest.raises(NotFound, match="missing"):
        store.tag(NAME, a)
    assert store.entries() == []


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "docker.io/ai/x:latest\n",
        "a\nb",
        "x\x00y",
        "a b",
        "a\tb",
        "x\u2028y",
        "x\u200by",
        "x\x7f",
        "x" * 2000,
    ],
)
def test_hostile_names_rejected(store: Layout, bad: str) -> None:
    a = put_model(store, [b"weights"])
    with pytest.raises(InvalidReference):
        store.tag(bad, a)
    assert store.entries() == []


def test_find_by_digest(store: Layout) -> None:
    a = put_model(store, [b"A"])
    b = put_model(store, [b"B"])
    store.tag("docker.io/ai/a:1", a)
    store.tag("docker.io/ai/a:2", a)
    store.tag("docker.io/ai/b:1", b)
    hex_a = a.digest.hex
    assert [n for n, _ in store.find_by_digest(hex_a[:12])] == ["docker.io/ai/a:1", "docker.io/ai/a:2"]
    assert [n for n, _ in store.find_by_digest(a.digest)] == ["docker.io/ai/a:1", "docker.io/ai/a:2"]
    assert [n for n, _ in store.find_by_digest("sha256:" + b.digest.hex[:8])] == ["docker.io/ai/b:1"]
    for bad in ("", "zz", "../", hex_a.upper(), "sha256:"):
        assert store.find_by_digest(bad) == []


def test_foreign_index_content_is_preserved(store: Layout) -> None:
    a = put_model(store, [b"A"])
    other = put_model(store, [b"untagged"])
    doc = json.loads(store.index_path.read_bytes())
    doc["annotations"] = {"org.example": "kept"}
    doc["manifests"].append(other.to_json())  # an untagged entry written by another tool
    store.index_path.write_text(json.dumps(doc))
    store.tag(NAME, a)
    after = json.loads(store.index_path.read_bytes())
    assert after["annotations"] == {"org.example": "kept"}
    assert [m["digest"] for m in after["manifests"]] == [other.digest, a.digest]
    assert [n for n, _ in store.entries()] == [NAME]
    assert store.prune(grace_seconds=0) == []  # the untagged entry still protects its blobs


def test_malformed_index_is_an_integrity_error(store: Layout) -> None:
    for text in ("{", "[]", '{"manifests": {}}', '{"manifests": [{"digest": "sha256:../x"}]}'):
        store.index_path.write_text(text)
        with pytest.raises(IntegrityError):
            store.entries()


def test_locked_is_reentrant_across_layout_objects(store: Layout) -> None:
    a = put_model(store, [b"A"])
    with store.locked(), Layout(store.root).locked():
        Layout(store.root).tag(NAME, a)
    assert store.resolve(NAME) is not None


# -- removal and prune ---------------------------------------------------------------------------------------


def test_remove_keeps_blobs_of_other_tags(store: Layout) -> None:
    a = put_model(store, [b"A-weights", b"shared license"])
    b = put_model(store, [b"B-weights", b"shared license"])
    store.tag("docker.io/ai/a:latest", a)
    store.tag("docker.io/ai/b:latest", b)
    deleted = store.remove("docker.io/ai/a:latest")
    assert set(deleted) == {a.digest, digest.of_bytes(b"A-weights")}  # config and license are shared with b
    assert deleted[0] == a.digest  # the manifest goes first
    assert store.resolve("docker.io/ai/a:latest") is None
    for blob in (b.digest, digest.of_bytes(b"B-weights"), digest.of_bytes(b"shared license")):
        assert store.has_blob(blob)
    assert store.read_blob(b.digest)
    deleted = store.remove("docker.io/ai/b:latest")
    assert digest.of_bytes(b"shared license") in deleted
    assert blobs(store) == set()


def test_remove_one_of_two_names_for_one_manifest_deletes_nothing(store: Layout) -> None:
    a = put_model(store, [b"A"])
    store.tag("docker.io/ai/a:latest", a)
    store.tag("docker.io/ai/a:v1", a)
    assert store.remove("docker.io/ai/a:latest") == []
    assert store.resolve("docker.io/ai/a:v1") is not None and len(blobs(store)) == 3
    with pytest.raises(NotFound):
        store.remove("docker.io/ai/a:latest")


def test_remove_leaves_unrelated_unreferenced_blobs_to_prune(store: Layout) -> None:
    a = put_model(store, [b"A"])
    store.tag(NAME, a)
    in_flight = store.write_blob(b"layer of a pull that has not tagged yet")
    store.remove(NAME)
    assert blobs(store) == {in_flight}


def test_referrers_live_and_die_with_their_subject(store: Layout) -> None:
    a = put_model(store, [b"A"])
    store.tag(NAME, a)
    card = put_model(store, [b"# card"], config=b"{}", subject=a)
    assert store.prune(grace_seconds=0) == []  # the card's subject is tagged: the card is referenced
    usage = store.disk_usage()
    assert usage.unreferenced_bytes == 0
    deleted = store.remove(NAME)
    assert card.digest in deleted and digest.of_bytes(b"# card") in deleted
    assert blobs(store) == set()


def test_prune_honours_the_grace_period(store: Layout) -> None:
    a = put_model(store, [b"A"])
    store.tag(NAME, a)
    fresh = store.write_blob(b"fresh unreferenced")
    old = store.write_blob(b"old unreferenced")
    stale_tmp = store.root / ".tmp" / "crashed-write"
    stale_tmp.write_bytes(b"x")
    long_ago = time.time() - 7200
    for path in (
        store.blob_path(old),
        store.blob_path(a.digest),
        store.blob_path(digest.of_bytes(b"A")),
        stale_tmp,
    ):
        os.utime(path, (long_ago, long_ago))
    assert store.prune() == [old]
    assert store.has_blob(fresh) and store.has_blob(a.digest) and store.has_blob(digest.of_bytes(b"A"))
    assert not stale_tmp.exists()
    assert store.prune(grace_seconds=0) == [fresh]
    assert store.read_blob(a.digest)


def test_disk_usage(store: Layout) -> None:
    assert store.disk_usage().blobs == 0
    a = put_model(store, [b"A" * 100])
    store.tag("docker.io/ai/a:1", a)
    store.tag("docker.io/ai/a:2", a)
    store.write_blob(b"z" * 50)
    usage = store.disk_usage()
    referenced = a.size + 100 + len(b'{"config":{"format":"gguf"}}')
    assert (usage.blobs, usage.models, usage.tags) == (4, 1, 2)
    assert (usage.total_bytes, usage.referenced_bytes, usage.unreferenced_bytes) == (
        referenced + 50,
        referenced,
        50,
    )


# -- concurrency ---------------------------------------------------------------------------------------------


def _tag_worker(root: str, manifest: dict[str, object], worker: int, count: int) -> None:
    store = Layout(Path(root))
    desc = Descriptor.from_json(manifest)
    for i in range(count):
        name = f"docker.io/ai/w{worker}:t{i}"
        store.tag(name, desc)
        if i % 5 == 0:  # churn: untag and tag again
            assert store.untag(name) is not None
            store.tag(name, desc)


def test_concurrent_taggers_never_lose_an_entry(store: Layout) -> None:
    a = put_model(store, [b"A"])
    workers, count = 4, 20
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_tag_worker, args=(str(store.root), a.to_json(), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):
        doc = json.loads(store.index_path.read_bytes())  # never torn
        assert isinstance(doc["manifests"], list)
        store.entries()
        reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    names = [n for n, _ in store.entries()]
    assert len(names) == len(set(names)) == workers * count
    assert set(names) == {f"docker.io/ai/w{w}:t{i}" for w in range(workers) for i in range(count)}
    assert reads > 0
    assert not list((store.root / ".tmp").iterdir())


# -- interoperability: skopeo reads the store as an OCI layout -----------------------------------------------


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_and_copies_the_store(store: Layout, tmp_path: Path) -> None:
    a = put_model(store, [b"GGUF" + bytes(60), b"Apache-2.0"], config=b'{"config":{"format":"gguf"}}')
    store.tag(NAME, a)
    raw = subprocess.run(
        ["skopeo", "--insecure-policy", "inspect", "--raw", f"oci:{store.root}:{NAME}"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert raw == store.read_blob(a.digest)

    other = tmp_path / "other"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{store.root}:{NAME}", f"oci:{other}:x"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    copy = Layout(other)
    desc = copy.resolve("x")
    assert desc is not None
    copied = json.loads(copy.read_blob(desc.digest))
    assert copied == json.loads(raw)  # same manifest document (skopeo may re-serialise it)
    for blob in [copied["config"], *copied["layers"]]:
        assert copy.read_blob(blob["digest"]) == store.read_blob(blob["digest"])
