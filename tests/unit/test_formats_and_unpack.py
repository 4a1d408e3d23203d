"""``package --format modelpack|image`` and the image reader: reproducible bytes, ModelPack's schema, the tar layer's
shape, and unpacking that refuses hostile or damaged layers without leaving a file behind."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
from helpers.ggufs import tiny_llama

from modelctl import artifact, digest
from modelctl import config as _config
from modelctl.errors import DigestMismatch, IntegrityError, UnsupportedFormat, UsageError
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.reference import parse
from modelctl.services import package_formats
from modelctl.services.package import PackageInput, package
from modelctl.store import Layout, unpack
from modelctl.store import models as local

EPOCH = "1700000000"


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return tiny_llama(tmp_path / "tiny.gguf")


def build(home: Path, gguf: Path, fmt: str, **extra: object) -> tuple[Layout, local.LocalModel]:
    cfg = _config.from_env({"MODELCTL_HOME": str(home)})
    result = package(cfg, [parse("example.test/m:1")], PackageInput(gguf=[gguf], format=fmt, **extra))
    store = Layout(cfg.store_dir)
    entry = local.resolve(store, result.digest)
    return store, entry


def read_json(store: Layout, desc: Descriptor) -> dict[str, object]:
    doc = json.loads(store.read_blob(desc.digest))
    assert isinstance(doc, dict)
    return doc


# -- reproducible -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker", "modelpack", "image"])
def test_same_epoch_same_digest(tmp_path: Path, gguf: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    _, first = build(tmp_path / "a", gguf, fmt)
    os.utime(gguf, (1, 1))  # the input's own mtime never reaches the artifact
    _, second = build(tmp_path / "b", gguf, fmt)
    assert first.desc.digest == second.desc.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(EPOCH) + 1))
    _, later = build(tmp_path / "c", gguf, fmt)
    assert later.desc.digest != first.desc.digest


def test_image_layer_digest_ignores_the_clock_without_an_epoch(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SOURCE_DATE_EPOCH the files' mtime is 0: re-packaging a GGUF re-uses the registry's layer."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    _, first = build(tmp_path / "a", gguf, "image", created="2025-01-01T00:00:00Z")
    _, second = build(tmp_path / "b", gguf, "image", created="2026-01-01T00:00:00Z")
    assert first.manifest.layers == second.manifest.layers
    assert first.desc.digest != second.desc.digest  # the config's created time differs


# -- modelpack ----------------------------------------------------------------------------------------------------


def test_modelpack_config_follows_the_schema(tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema
    from modelpack_client.schema import CONFIG_SCHEMA  # ModelPack's own config-schema.json

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    store, entry = build(tmp_path / "h", gguf, "modelpack")
    doc = read_json(store, entry.manifest.config)
    jsonschema.Draft202012Validator(CONFIG_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc["modelfs"] == {"type": "layers", "diffIds": [layer.digest for layer in entry.manifest.layers]}
    raw = json.loads(store.read_blob(entry.desc.digest))
    assert raw["artifactType"] == mt.MODELPACK_MANIFEST
    assert raw["config"]["mediaType"] == mt.MODELPACK_CONFIG
    (layer,) = entry.manifest.layers
    assert layer.media_type == mt.MODELPACK_WEIGHT
    assert layer.annotations[mt.FILEPATH] == layer.annotations[mt.TITLE] == "tiny.gguf"
    metadata = json.loads(layer.annotations[mt.FILE_METADATA])
    assert metadata == {
        "name": "tiny.gguf",
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "size": gguf.stat().st_size,
        "mtime": "2023-11-14T22:13:20Z",
        "typeflag": ord("0"),
    }
    assert entry.model.format == artifact.MODELPACK
    assert (entry.model.architecture, entry.model.quantization) == ("llama", "F32")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (134_515_008, "134.5M"),
        (8_030_261_248, "8B"),
        (1_500_000_000_000, "1.5T"),
    ],
)
def test_param_size(count: int, text: str) -> None:
    assert package_formats.param_size(count) == text


def test_modelpack_refuses_a_context_size(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(UsageError, match="context size"):
        build(tmp_path / "h", gguf, "modelpack", context_size=4096)


def test_unknown_format_is_a_usage_error(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(UsageError, match="unknown --format 'oci'") as caught:
        build(tmp_path / "h", gguf, "oci")
    assert caught.value.exit_code == 2


def test_projector_and_template_keep_their_roles(tmp_path: Path, gguf: Path) -> None:
    projector = tiny_llama(tmp_path / "projector.gguf", seed=3)
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    for fmt in ("modelpack", "image"):
        _, entry = build(tmp_path / fmt, gguf, fmt, mmproj=projector, chat_template=template)
        assert entry.model.mmproj is not None and entry.model.chat_template is not None
        assert entry.model.mmproj.annotations[mt.FILEPATH] == "mmproj-projector.gguf"
        assert entry.model.chat_template.annotations[mt.FILEPATH] == "chat.jinja"
        assert len(entry.model.gguf) == 1


# -- image --------------------------------------------------------------------------------------------------------


def test_image_layer_is_one_file_under_models(tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    store, entry = build(tmp_path / "h", gguf, "image", context_size=4096)
    (layer,) = entry.manifest.layers
    assert layer.media_type == mt.OCI_LAYER_TAR
    with tarfile.open(store.blob_path(layer.digest)) as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.mode, m.uid, m.gid, m.uname, m.mtime) for m in members] == [
            ("models", tarfile.DIRTYPE, 0o755, 0, 0, "", int(EPOCH)),
            ("models/tiny.gguf", tarfile.REGTYPE, 0o644, 0, 0, "", int(EPOCH)),
        ]
        data = tar.extractfile(members[1])
        assert data is not None and data.read() == gguf.read_bytes()
    config = read_json(store, entry.manifest.config)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.digest]}
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert entry.model.format == artifact.IMAGE
    assert (entry.model.architecture, entry.model.context_size, entry.model.created) == (
        "llama",
        4096,
        "2023-11-14T22:13:20Z",
    )


def test_materialise_unpacks_once(tmp_path: Path, gguf: Path) -> None:
    cfg = _config.from_env({"MODELCTL_HOME": str(tmp_path / "h")})
    store, entry = build(tmp_path / "h", gguf, "image")
    (path,) = local.materialise(cfg, store, entry)
    assert not path.is_symlink() and path.read_bytes() == gguf.read_bytes()
    before = path.stat().st_mtime_ns
    assert local.materialise(cfg, store, entry) == [path]
    assert path.stat().st_mtime_ns == before  # kept: the stamp beside it matches
    path.write_bytes(b"tampered")
    local.materialise(cfg, store, entry)
    assert path.read_bytes() == gguf.read_bytes()  # changed since: unpacked again


def test_big_file_headers_use_pax() -> None:
    """ustar's size field stops at 8 GiB; a 9 GiB GGUF's header carries a pax size record that tar readers use."""
    header = package_formats._header("models/big.gguf", 9 << 30, 0)
    info = tarfile.TarInfo.frombuf(header[:512], "utf-8", "surrogateescape")
    assert info.type == tarfile.XHDTYPE
    with tarfile.open(fileobj=io.BytesIO(header + b"\0" * 1024)) as tar:
        assert tar.next() is not None and tar.members[0].size == 9 << 30


# -- hostile or damaged layers ------------------------------------------------------------------------------------


def tar_bytes(*entries: tuple[str, bytes | None, bytes]) -> bytes:
    """A tar of (name, data or None for a symlink, type) entries."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def stored(
    tmp_path: Path, blob: bytes, *, diff_id: str | None = None, gzipped: bool = False
) -> tuple[Layout, artifact.Packed]:
    """``blob`` as a layer in a store under ``tmp_path`` (gzipped if asked), and where its file sits."""
    store = Layout(tmp_path / "store")
    store.ensure()
    layer_bytes = gzip.compress(blob, mtime=0) if gzipped else blob
    layer = Descriptor(
        media_type=mt.OCI_LAYER_TAR_GZIP if gzipped else mt.OCI_LAYER_TAR,
        digest=store.write_blob(layer_bytes),
        size=len(layer_bytes),
    )
    diff = digest.Digest(diff_id or digest.of_bytes(blob))
    return store, artifact.Packed(layer=layer, member="models/model.gguf", diff_id=diff, gzip=gzipped)


REG, SYM = tarfile.REGTYPE, tarfile.SYMTYPE
GOOD = b"GGUF" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("models/model.gguf", None, SYM)], "not a plain file"),
        ([("../models/model.gguf", GOOD, REG), ("/etc/passwd", b"x", REG)], "holds no models/model.gguf"),
        ([("models/model.gguf", GOOD, REG), ("./models/model.gguf", GOOD, REG)], "holds models/model.gguf twice"),
    ],
    ids=["symlink", "only-escaping-names", "twice"],
)
def test_hostile_layers_are_refused(
    tmp_path: Path, entries: list[tuple[str, bytes | None, bytes]], message: str
) -> None:
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(IntegrityError, match=message):
        unpack.unpack(*stored(tmp_path, tar_bytes(*entries)), target)
    assert list((tmp_path / "out").iterdir()) == []  # no partial, no stamp
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("name", ["models/model.gguf", "/models/model.gguf", "./models/model.gguf"])
def test_member_spellings(tmp_path: Path, name: str) -> None:
    target = tmp_path / "out" / "model.gguf"
    unpack.unpack(*stored(tmp_path, tar_bytes((name, GOOD, REG))), target)
    assert target.read_bytes() == GOOD


def test_gzip_layer_checks_the_uncompressed_digest(tmp_path: Path) -> None:
    blob = tar_bytes(("models/model.gguf", GOOD, REG))
    target = tmp_path / "out" / "model.gguf"
    unpack.unpack(*stored(tmp_path, blob, gzipped=True), target)
    assert target.read_bytes() == GOOD


def test_wrong_diff_id_leaves_no_file(tmp_path: Path) -> None:
    blob = tar_bytes(("models/model.gguf", GOOD, REG))
    wrong = digest.of_bytes(b"something else")
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(DigestMismatch):
        unpack.unpack(*stored(tmp_path, blob, diff_id=wrong), target)
    assert list((tmp_path / "out").iterdir()) == []


def test_gzip_bomb_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_EXPANSION", 2)
    blob = tar_bytes(("models/model.gguf", b"\0" * (8 << 20), REG))  # 8 MiB of zeros: a few KiB gzipped
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(IntegrityError, match="expands past its limit"):
        unpack.unpack(*stored(tmp_path, blob, gzipped=True), target)
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_and_oversized_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tar_bytes(("models/model.gguf", GOOD, REG))
    with pytest.raises(IntegrityError, match="not a readable tar layer"):
        unpack.unpack(*stored(tmp_path / "a", blob[:700]), tmp_path / "o1" / "model.gguf")
    monkeypatch.setattr(unpack, "MAX_HEADER", 10)
    long_name = tar_bytes(("models/" + "x" * 200, b"x", REG), ("models/model.gguf", GOOD, REG))
    with pytest.raises(IntegrityError, match="tar header of"):
        unpack.unpack(*stored(tmp_path / "b", long_name), tmp_path / "o2" / "model.gguf")


def test_member_span_finds_the_file_after_its_headers() -> None:
    long_name = "models/" + "n" * 150 + ".gguf"  # past ustar's 100 bytes: a pax header comes first
    blob = tar_bytes(("models/", b"", tarfile.DIRTYPE), ("./" + long_name, GOOD, REG), ("models/link", None, SYM))
    offset, size = unpack.member_span(blob, long_name) or (0, 0)
    assert blob[offset : offset + size] == GOOD and offset > 1024
    assert unpack.member_span(blob, "models/link") is None  # not a plain file
    assert unpack.member_span(blob[:600], long_name) is None  # its header is not in the bytes given
    assert unpack.member_span(b"not a tar" * 100, long_name) is None


# -- reading manifests --------------------------------------------------------------------------------------------


def image_manifest(layers: list[dict[str, object]], config: dict[str, object]) -> tuple[Manifest, bytes]:
    raw_config = json.dumps(config).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_IMAGE_CONFIG, "digest": digest.of_bytes(raw_config), "size": len(raw_config)},
        "layers": layers,
    }
    parsed = descriptor.parse(json.dumps(doc).encode())
    assert isinstance(parsed, Manifest)
    return parsed, raw_config


def test_an_ordinary_container_image_is_not_a_model() -> None:
    layer = {"mediaType": mt.OCI_LAYER_TAR_GZIP, "digest": digest.of_bytes(b"base"), "size": 4}
    manifest, config = image_manifest([layer], {"rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}})
    with pytest.raises(UnsupportedFormat, match="container image") as caught:
        artifact.from_manifest(manifest, config)
    assert "--format image" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("diff_ids", "message"),
    [([], "one digest per layer"), (["sha256:" + "0" * 64], "names sha256:0000")],
    ids=["missing", "not-the-layer"],
)
def test_image_config_must_match_its_layers(diff_ids: list[str], message: str) -> None:
    layer = {
        "mediaType": mt.OCI_LAYER_TAR,
        "digest": digest.of_bytes(b"layer"),
        "size": 5,
        "annotations": {mt.FILEPATH: "model.gguf"},
    }
    manifest, config = image_manifest([layer], {"rootfs": {"type": "layers", "diff_ids": diff_ids}})
    with pytest.raises(IntegrityError, match=message):
        artifact.from_manifest(manifest, config)


def test_image_annotation_cannot_escape() -> None:
    layer_digest = digest.of_bytes(b"layer")
    layer = {"mediaType": mt.OCI_LAYER_TAR, "digest": layer_digest, "size": 5, "annotations": {mt.FILEPATH: "../x"}}
    manifest, config = image_manifest([layer], {"rootfs": {"type": "layers", "diff_ids": [layer_digest]}})
    with pytest.raises(IntegrityError, match="unsafe file path"):
        artifact.from_manifest(manifest, config)


def test_cli_lists_the_format_option() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "modelctl", "package", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "docker|modelpack|image" in out.stdout
