"""``modelctl verify``'s logic on a real store in tmp: what counts as damaged, who uses it, what the repair does with
each answer of the source (the pull stands in as a fake here; tests/integration/test_verify_real.py pulls for real)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelctl import config as _config
from modelctl import digest, reference
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, NotFound, RegistryError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services import pull as pull_service
from modelctl.services import verify as service
from modelctl.store import Layout
from modelctl.store import verify as blobs
from modelctl.transfer import Progress

ONE = "docker.io/ai/one:1"
TWO = "127.0.0.1:5000/ai/two:latest"
SHARED = b"GGUF" + bytes(range(256)) * 8


class Recorder:
    """A pull reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[Progress] = []
        self.warnings: list[str] = []

    def resolved(self, ref: object, model: object, to_fetch: int) -> None:
        pass

    def progress(self, event: Progress) -> None:
        self.events.append(event)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest.of_bytes(data), "size": len(data)}


def add_model(store: Layout, name: str, layers: list[bytes]) -> Descriptor:
    """Write a Docker v0.1 model (config, layers, manifest) and tag it ``name``."""
    config = json.dumps({"config": {"format": "gguf"}, "name": name}).encode()
    for blob in [config, *layers]:
        store.write_blob(blob)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.DOCKER_MODEL_CONFIG_V01, config),
        "layers": [_desc(mt.DOCKER_GGUF, layer) for layer in layers],
    }
    raw = json.dumps(doc).encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write_blob(raw), size=len(raw))
    store.tag(name, desc)
    return desc


@pytest.fixture
def config() -> Config:
    return _config.from_env()


@pytest.fixture
def store(config: Config) -> Layout:
    layout = Layout(config.store_dir)
    layout.ensure()
    return layout


def flip(path: Path, offset: int = 8, count: int = 16) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def test_a_clean_store_is_ok(config: Config, store: Layout) -> None:
    add_model(store, ONE, [SHARED, b"license"])
    report = service.verify(config, [], Recorder())
    assert report.ok and report.error() is None and not report.damaged
    assert report.blobs == 4  # config, two layers, manifest
    assert report.to_json()["ok"] is True


def test_changed_bytes_are_found_with_every_model_using_them(config: Config, store: Layout) -> None:
    add_model(store, ONE, [SHARED])
    add_model(store, TWO, [SHARED, b"other"])
    layer = digest.of_bytes(SHARED)
    flip(store.blob_path(layer))
    report = service.verify(config, [], Recorder())
    assert [d.finding.digest for d in report.damaged] == [layer]
    damaged = report.damaged[0]
    assert damaged.finding.problem == blobs.DIGEST
    assert damaged.finding.actual_digest == digest.of_bytes(store.blob_path(layer).read_bytes())
    assert set(damaged.models) == {ONE, TWO}
    error = report.error()
    assert isinstance(error, IntegrityError) and error.exit_code == 5
    assert "verify --repair" in str(error) and "ai/one:1" in str(error)
    assert store.blob_path(layer).exists(), "verify without --repair changes nothing"


def test_a_truncated_blob_is_a_size_problem_and_is_not_hashed(config: Config, store: Layout) -> None:
    add_model(store, ONE, [SHARED])
    layer = digest.of_bytes(SHARED)
    os.truncate(store.blob_path(layer), 100)
    report = service.verify(config, [], Recorder())
    finding = report.damaged[0].finding
    assert (finding.problem, finding.expected_size, finding.actual_size) == (blobs.SIZE, len(SHARED), 100)


def test_a_missing_blob_counts_as_damaged(config: Config, store: Layout) -> None:
    add_model(store, ONE, [SHARED])
    layer = digest.of_bytes(SHARED)
    store.blob_path(layer).unlink()
    report = service.verify(config, [], Recorder())
    assert [(d.finding.digest, d.finding.problem, d.models) for d in report.damaged] == [(layer, blobs.MISSING, (ONE,))]
    assert report.to_json()["damaged"][0]["problem"] == "missing"  # type: ignore[index]


def test_named_models_check_only_their_blobs(config: Config, store: Layout) -> None:
    add_model(store, ONE, [b"GGUF one"])
    add_model(store, TWO, [b"GGUF two"])
    flip(store.blob_path(digest.of_bytes(b"GGUF two")), offset=0, count=4)
    assert service.verify(config, ["ai/one:1"], Recorder()).ok
    assert not service.verify(config, ["127.0.0.1:5000/ai/two"], Recorder()).ok
    with pytest.raises(NotFound):
        service.verify(config, ["ai/absent"], Recorder())


def test_an_unused_damaged_blob_is_reported_and_removed_by_the_repair(config: Config, store: Layout) -> None:
    stray = store.write_blob(b"left by an interrupted pull")
    flip(store.blob_path(stray), offset=0, count=4)
    report = service.verify(config, [], Recorder())
    assert [(d.finding.digest, d.models) for d in report.damaged] == [(stray, ())]
    repaired = service.verify(config, [], Recorder(), repair=True)
    assert repaired.ok and repaired.removed == [stray] and not store.blob_path(stray).exists()


def test_progress_follows_large_blobs_only(config: Config, store: Layout) -> None:
    big = b"GGUF" + os.urandom(3 << 20)
    add_model(store, ONE, [big])
    seen = Recorder()
    report = service.verify(config, [], seen)
    assert {e.digest for e in seen.events} == {digest.of_bytes(big)}
    assert seen.events[-1].done == seen.events[-1].total == len(big)
    assert report.bytes >= len(big)


class FakePull:
    """Stands in for the pull: records the references, restores the blobs it is given, or raises."""

    def __init__(self, store: Layout, restore: dict[Digest, bytes], error: Exception | None = None) -> None:
        self.store = store
        self.restore = restore
        self.error = error
        self.refs: list[reference.Reference] = []

    def __call__(self, config: Config, refs: list[reference.Reference], reporter: object) -> list[object]:
        self.refs.extend(refs)
        if self.error is not None:
            raise self.error
        for data in self.restore.values():
            self.store.write_blob(data)
        return []


def test_repair_removes_the_damage_and_pulls_each_model_pinned(
    config: Config, store: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = add_model(store, ONE, [SHARED])
    two = add_model(store, TWO, [SHARED])
    layer = digest.of_bytes(SHARED)
    flip(store.blob_path(layer))
    fake = FakePull(store, {layer: SHARED})
    monkeypatch.setattr(pull_service, "pull", fake)
    report = service.verify(config, [], Recorder(), repair=True)
    assert report.removed == [layer] and report.restored == [ONE, TWO] and report.ok
    assert [str(r) for r in fake.refs] == [f"{ONE}@{one.digest}", f"{TWO}@{two.digest}"]
    assert service.verify(config, [], Recorder()).ok
    assert report.to_json()["repair"] == {"removed": [layer], "restored": [ONE, TWO], "incomplete": []}


def test_repair_offline_removes_the_blob_keeps_the_tag_and_exits_7(
    config: Config, store: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_model(store, ONE, [SHARED])
    layer = digest.of_bytes(SHARED)
    flip(store.blob_path(layer))
    offline = RegistryError("registry registry-1.docker.io unreachable", temporary=True)
    monkeypatch.setattr(pull_service, "pull", FakePull(store, {}, offline))
    report = service.verify(config, [], Recorder(), repair=True)
    assert report.removed == [layer] and not store.blob_path(layer).exists()
    assert [name for name, _ in store.entries()] == [ONE], "nothing is untagged"
    assert [i.reference for i in report.incomplete] == [ONE]
    assert "verify --repair ai/one:1" in report.incomplete[0].fix()
    error = report.error()
    assert isinstance(error, RegistryError) and error.exit_code == 7 and "ai/one:1" in str(error)
    again = service.verify(config, [], Recorder())
    assert [d.finding.problem for d in again.damaged] == [blobs.MISSING]


def test_repair_that_the_source_refuses_exits_5(config: Config, store: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    add_model(store, ONE, [SHARED])
    flip(store.blob_path(digest.of_bytes(SHARED)))
    monkeypatch.setattr(pull_service, "pull", FakePull(store, {}, NotFound("manifest unknown")))
    report = service.verify(config, [], Recorder(), repair=True)
    error = report.error()
    assert isinstance(error, IntegrityError) and error.exit_code == 5
    assert "modelctl pull ai/one:1" in report.incomplete[0].fix()


def test_source_reference_pins_registry_names_only() -> None:
    manifest = Digest.sha256("a" * 64)
    assert str(service.source_reference(TWO, manifest)) == f"{TWO}@{manifest}"
    hub = "hf.co/org/repo:Q4_K_M"
    assert str(service.source_reference(hub, manifest)) == hub
    pinned = f"docker.io/ai/x@sha256:{'b' * 64}"
    assert str(service.source_reference(pinned, manifest)) == pinned


def test_discard_spares_a_file_replaced_since_the_check(store: Layout) -> None:
    data = b"GGUF replaced"
    good = store.write_blob(data)
    flip(store.blob_path(good), offset=0, count=4)
    finding = blobs.check(store, good, len(data))
    assert finding is not None and finding.problem == blobs.DIGEST
    store.blob_path(good).unlink()
    store.write_blob(data)  # a concurrent pull put a good copy in place
    assert not blobs.discard(store, finding)
    assert blobs.check(store, good, len(data)) is None


def test_recheck_reports_a_wrong_size_and_removes_changed_content(store: Layout) -> None:
    short, changed = b"GGUF short", b"GGUF changed"
    short_digest, changed_digest = store.write_blob(short), store.write_blob(changed)
    os.truncate(store.blob_path(short_digest), 3)
    flip(store.blob_path(changed_digest), offset=0, count=4)
    layers = [
        Descriptor(media_type=mt.DOCKER_GGUF, digest=d, size=len(b))
        for d, b in [(short_digest, short), (changed_digest, changed)]
    ]
    warnings: list[str] = []
    assert not blobs.recheck(store, layers, warnings.append)  # sizes only: the changed one passes
    assert len(warnings) == 1 and short_digest in warnings[0] and "3 bytes" in warnings[0]
    warnings.clear()
    assert blobs.recheck(store, layers, warnings.append, full=True)
    assert len(warnings) == 2 and not store.blob_path(changed_digest).exists()
    assert store.blob_path(short_digest).exists(), "a wrong size is left for the pull to replace"
