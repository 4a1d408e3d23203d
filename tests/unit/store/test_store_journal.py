"""Blobs committed without an fsync: the journal of unflushed blobs, and its recovery after a (faked) reboot."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from modelctl import digest
from modelctl.store import Layout
from modelctl.store import journal as unflushed

BOOT_A = "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
BOOT_B = "22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


@pytest.fixture
def boot_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "boot_id"
    path.write_text(BOOT_A + "\n")
    monkeypatch.setattr(unflushed, "BOOT_ID_PATH", path)
    return path


@pytest.fixture
def store(tmp_path: Path, boot_file: Path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.ensure()
    return layout


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inodes of the regular files fsynced (directories left out)."""
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            calls.append(st.st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def commit(store: Layout, data: bytes, *, flush: bool = False) -> tuple[str, Path]:
    src = store.root / ".tmp" / f"incoming-{os.urandom(4).hex()}"
    src.write_bytes(data)
    d = digest.of_bytes(data)
    return d, store.commit_blob(src, d, flush=flush)


def journal(store: Layout) -> dict[str, dict[str, object]]:
    doc = json.loads((store.root / unflushed.JOURNAL).read_bytes())
    return {e["digest"]: e for e in doc["blobs"]}


def age_entries(store: Layout, seconds: float) -> None:
    path = store.root / unflushed.JOURNAL
    doc = json.loads(path.read_bytes())
    for e in doc["blobs"]:
        e["time"] -= seconds
    path.write_text(json.dumps(doc))


def test_boot_id_reads_the_file_and_is_none_when_unreadable(boot_file: Path, tmp_path: Path) -> None:
    assert unflushed.boot_id() == BOOT_A
    assert unflushed.boot_id(tmp_path / "absent") is None


def test_commit_without_flush_records_the_blob_and_skips_its_fsync(store: Layout, fsyncs: list[int]) -> None:
    before = time.time()
    d, path = commit(store, b"layer bytes")
    assert path.read_bytes() == b"layer bytes"
    assert store.read_blob(d) == b"layer bytes"
    entry = journal(store)[d]
    assert entry["boot"] == BOOT_A and entry["size"] == len(b"layer bytes")
    assert before <= float(entry["time"]) <= time.time()  # type: ignore[arg-type]
    assert path.stat().st_ino not in fsyncs
    assert not list((store.root / ".tmp").iterdir())  # the journal's temp file was renamed


def test_commit_with_flush_fsyncs_and_writes_no_journal(store: Layout, fsyncs: list[int]) -> None:
    _, path = commit(store, b"config bytes", flush=True)
    assert path.stat().st_ino in fsyncs
    assert not (store.root / unflushed.JOURNAL).exists()


def test_without_a_boot_id_an_unflushed_commit_flushes(store: Layout, boot_file: Path, fsyncs: list[int]) -> None:
    boot_file.unlink()
    _, path = commit(store, b"layer bytes")
    assert path.stat().st_ino in fsyncs
    assert not (store.root / unflushed.JOURNAL).exists()


def test_committing_the_same_blob_again_keeps_one_entry(store: Layout) -> None:
    d, _ = commit(store, b"same")
    commit(store, b"same")
    doc = json.loads((store.root / unflushed.JOURNAL).read_bytes())
    assert [e["digest"] for e in doc["blobs"]] == [d]


def test_a_blob_of_the_wrong_size_is_rejected_without_hashing(store: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = commit(store, b"a layer")
    path.write_bytes(b"a lay")
    monkeypatch.setattr(digest, "of_file", lambda *a: pytest.fail("hashed a blob whose size was already wrong"))
    entry = unflushed.load(store.root)
    assert entry is not None
    assert not unflushed.intact(path, entry[0])


def test_after_a_reboot_a_damaged_blob_is_deleted_and_an_intact_one_kept(store: Layout, boot_file: Path) -> None:
    good, good_path = commit(store, b"intact layer")
    bad, bad_path = commit(store, b"damaged layer")
    short, short_path = commit(store, b"truncated layer")
    bad_path.write_bytes(b"damaged lay\0\0")  # same size, other bytes: only the hash can tell
    short_path.write_bytes(b"trunc")
    boot_file.write_text(BOOT_B)

    removed = store.recover_unflushed()

    assert sorted(removed) == sorted([bad, short])
    assert not bad_path.exists() and not short_path.exists()
    assert good_path.read_bytes() == b"intact layer" and store.has_blob(good)
    assert not (store.root / unflushed.JOURNAL).exists()


def test_a_young_entry_of_this_boot_stays(store: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = commit(store, b"fresh layer")

    @contextmanager
    def no_lock() -> Iterator[None]:
        raise AssertionError("recovery took the lock with nothing to do")
        yield

    monkeypatch.setattr(store, "locked", no_lock)
    assert store.recover_unflushed() == []
    assert list(journal(store)) == [d]


def test_a_settled_entry_of_this_boot_is_fsynced_and_dropped(store: Layout, fsyncs: list[int]) -> None:
    old, old_path = commit(store, b"old layer")
    age_entries(store, unflushed.SETTLE_SECONDS + 1)
    young, _ = commit(store, b"young layer")
    fsyncs.clear()

    assert store.recover_unflushed() == []

    assert old_path.stat().st_ino in fsyncs
    assert list(journal(store)) == [young]
    assert store.has_blob(old)


def test_an_entry_whose_blob_is_gone_is_dropped(store: Layout) -> None:
    _, path = commit(store, b"removed later")
    path.unlink()  # as remove/prune do: they leave the journal alone
    assert store.recover_unflushed() == []
    assert not (store.root / unflushed.JOURNAL).exists()


def test_an_entry_of_another_boot_whose_blob_is_gone_is_dropped(store: Layout, boot_file: Path) -> None:
    _, path = commit(store, b"removed later")
    path.unlink()
    boot_file.write_text(BOOT_B)
    assert store.recover_unflushed() == []
    assert not (store.root / unflushed.JOURNAL).exists()


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"blobs":[{"digest":"sha256:../../x","boot":"b","time":1,"size":1}]}',
        '{"blobs":[1]}',
        "[]",
        "\udcff",
    ],
)
def test_an_unparseable_journal_is_removed_without_error(store: Layout, text: str) -> None:
    _, path = commit(store, b"kept")
    (store.root / unflushed.JOURNAL).write_bytes(text.encode(errors="surrogateescape"))
    assert store.recover_unflushed() == []
    assert not (store.root / unflushed.JOURNAL).exists()
    assert path.read_bytes() == b"kept"


def test_no_journal_costs_one_failed_open_and_no_lock(store: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lock() -> None:
        raise AssertionError("recovery took the lock without a journal")

    def no_boot_id(path: Path | None = None) -> str | None:
        raise AssertionError("recovery read the boot id without a journal")

    monkeypatch.setattr(store, "locked", no_lock)
    monkeypatch.setattr(unflushed, "boot_id", no_boot_id)
    assert store.recover_unflushed() == []
    assert Layout(store.root / "never-created").recover_unflushed() == []


def test_concurrent_unflushed_commits_lose_no_entry(store: Layout) -> None:
    blobs = [f"layer {i}".encode() for i in range(8)]
    threads = [threading.Thread(target=commit, args=(store, b)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(journal(store)) == {digest.of_bytes(b) for b in blobs}


def test_prune_leaves_an_entry_that_recovery_then_drops(store: Layout) -> None:
    d, _ = commit(store, b"unreferenced layer")
    assert store.prune(grace_seconds=-1) == [d]
    assert d in journal(store)
    store.recover_unflushed()
    assert not (store.root / unflushed.JOURNAL).exists()
