"""save / load of OCI layout tars: round trip, referrers, hostile or damaged archives leaving the store as it was."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelctl import config as _config
from modelctl import digest
from modelctl.config import Config
from modelctl.errors import DigestMismatch, IntegrityError, NotFound, UsageError
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.services import archive
from modelctl.store import Layout
from modelctl.store.directory import blob_files

NAME = "docker.io/ai/tiny:1"
GGUF = b"GGUF" + bytes(range(256)) * 64
CARD = b"# tiny\n\nA model card.\n"


def home_config(home: Path) -> Config:
    return _config.from_env({"MODELCTL_HOME": str(home)})


def write_model(
    store: Layout, name: str = NAME, *, card: bool = True, algorithm: str = "sha256", config: bytes | None = None
) -> str:
    """A Docker v0.1 model with one GGUF layer, plus a model card attached as a referrer; returns its digest.
    The layer and the manifest are named by ``algorithm`` digests (the config by sha256 always); ``config``
    replaces the config blob's bytes."""
    store.ensure()
    layer = store.write_blob(GGUF, digest.of_bytes(GGUF, algorithm))
    cfg = (
        config
        or json.dumps(
            {"config": {"format": "gguf", "quantization": "Q4_1", "parameters": "1M", "architecture": "llama"}}
        ).encode()
    )
    cfg_digest = store.write_blob(cfg)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": cfg_digest, "size": len(cfg)},
            "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": layer, "size": len(GGUF)}],
        }
    ).encode()
    manifest_digest = store.write_blob(manifest, digest.of_bytes(manifest, algorithm))
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=manifest_digest, size=len(manifest))
    store.tag(name, desc)
    if card:
        empty = store.write_blob(b"{}")
        card_digest = store.write_blob(CARD)
        referrer = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "artifactType": mt.MODEL_CARD_ARTIFACT,
                "config": {"mediaType": mt.OCI_EMPTY, "digest": empty, "size": 2},
                "layers": [{"mediaType": mt.MODEL_CARD_LAYER, "digest": card_digest, "size": len(CARD)}],
                "subject": desc.to_json(),
            }
        ).encode()
        store.write_blob(referrer)
    return manifest_digest


@pytest.fixture()
def saved(tmp_path: Path) -> bytes:
    """The bytes of ``modelctl save`` of the tiny model (with its card)."""
    cfg = home_config(tmp_path / "source")
    write_model(Layout(cfg.store_dir))
    out = io.BytesIO()
    result = archive.save(cfg, ["ai/tiny:1"], out)
    assert [m.reference for m in result.models] == [NAME]
    assert result.referrers == 1 and result.blobs == 6
    return out.getvalue()


@pytest.fixture()
def target(tmp_path: Path) -> Config:
    return home_config(tmp_path / "target")


class Pipe(io.RawIOBase):
    """A non-seekable reader (like stdin): load must not need to seek."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.buf.read(min(len(b), 1000))
        b[: len(data)] = data
        return len(data)


def members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isreg() else None
            out.append((m, f.read() if f else None))
    return out


def build(items: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def rewrite(data: bytes, edit: Callable[[tarfile.TarInfo, bytes | None], bytes | None]) -> bytes:
    return build([(info, edit(info, content)) for info, content in members(data)])


def assert_untouched(cfg: Config) -> None:
    """Nothing tagged, nothing in blobs/, no staged file left behind."""
    store = Layout(cfg.store_dir)
    assert not store.index_path.exists() or store.entries() == []
    assert list(blob_files(store.blobs_dir)) == []
    tmp = store.root / ".tmp"
    assert not tmp.exists() or [p.name for p in tmp.iterdir() if p.name.startswith("load.")] == []


def blob_member(data: bytes, content: bytes) -> str:
    return next(m.name for m, c in members(data) if c == content)


# -- the round trip ---------------------------------------------------------------------------------------------


def test_round_trip_keeps_model_and_card(saved: bytes, target: Config) -> None:
    names = [m.name for m, _ in members(saved)]
    assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    index = json.loads(dict((m.name, c) for m, c in members(saved))["index.json"] or b"")
    assert [e.get("annotations", {}).get(mt.REF_NAME) for e in index["manifests"]] == [NAME, None]

    result = archive.load(target, Pipe(saved))  # type: ignore[arg-type]
    assert [m.reference for m in result.models] == [NAME]
    assert result.referrers == 1 and result.blobs == 6 and result.new_blobs == 6
    store = Layout(target.store_dir)
    desc = store.resolve(NAME)
    assert desc is not None
    [card] = store.referrers(desc.digest)
    assert card.artifact_type == mt.MODEL_CARD_ARTIFACT
    assert store.prune(grace_seconds=0) == [], "every loaded blob is referenced (the card through its subject)"
    assert store.read_blob(store.entries()[0][1].digest)

    again = archive.load(target, io.BytesIO(saved))  # idempotent; present blobs are verified but not rewritten
    assert again.new_blobs == 0 and [m.reference for m in again.models] == [NAME]


def test_round_trip_of_a_sha512_model(tmp_path: Path, target: Config) -> None:
    source = home_config(tmp_path / "source512")
    manifest_digest = write_model(Layout(source.store_dir), algorithm="sha512")
    out = io.BytesIO()
    assert archive.save(source, ["ai/tiny:1"], out).blobs == 6
    names = [m.name for m, _ in members(out.getvalue())]
    assert names[:5] == ["oci-layout", "index.json", "blobs", "blobs/sha256", "blobs/sha512"]
    assert f"blobs/sha512/{digest.Digest(manifest_digest).hex}" in names
    assert f"blobs/sha512/{digest.of_bytes(GGUF, 'sha512').hex}" in names

    result = archive.load(target, io.BytesIO(out.getvalue()))
    assert [m.reference for m in result.models] == [NAME] and result.referrers == 1 and result.new_blobs == 6
    store = Layout(target.store_dir)
    desc = store.resolve(NAME)
    assert desc is not None and desc.digest == manifest_digest
    assert store.blob_path(desc.digest).parent.name == "sha512"
    assert [c.artifact_type for c in store.referrers(desc.digest)] == [mt.MODEL_CARD_ARTIFACT]
    assert store.prune(grace_seconds=0) == []


def test_load_from_path_and_missing_file(saved: bytes, target: Config, tmp_path: Path) -> None:
    path = tmp_path / "m.tar"
    path.write_bytes(saved)
    assert archive.load_from_path(target, path).models[0].reference == NAME
    with pytest.raises(NotFound):
        archive.load_from_path(target, tmp_path / "absent.tar")


def test_save_to_path_is_atomic_and_refuses_a_corrupt_blob(tmp_path: Path) -> None:
    cfg = home_config(tmp_path / "source")
    store = Layout(cfg.store_dir)
    write_model(store, card=False)
    out = tmp_path / "out.tar"
    archive.save_to_path(cfg, [NAME], out)
    assert tarfile.is_tarfile(out)
    out.unlink()
    blob = store.blob_path("sha256:" + __import__("hashlib").sha256(GGUF).hexdigest())
    blob.write_bytes(GGUF[:-1] + b"X")  # same size, different content
    with pytest.raises(DigestMismatch):
        archive.save_to_path(cfg, [NAME], out)
    assert list(tmp_path.iterdir()) == [tmp_path / "source"], "no partial archive is left"


def test_save_of_an_absent_model(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        archive.save(home_config(tmp_path / "h"), ["ai/absent:1"], io.BytesIO())


def test_skopeo_style_names_and_extra_files_are_accepted(saved: bytes, target: Config) -> None:
    items = [(info, data) for info, data in members(saved)]
    for info, _ in items:
        info.name = "./" + info.name
    items.append((tarfile.TarInfo("manifest.json"), b"[]"))
    result = archive.load(target, io.BytesIO(build(items)))
    assert result.models[0].reference == NAME and "manifest.json" in result.skipped


# -- hostile and damaged archives --------------------------------------------------------------------------------


def _with_extra(saved: bytes, info: tarfile.TarInfo, data: bytes | None = None) -> bytes:
    items = members(saved)
    return build([items[0], (info, data), *items[1:]])


@pytest.mark.parametrize(
    "name",
    ["../evil", "blobs/../../evil", "/etc/passwd", "blobs/sha256/../../../x", "C:/x", "a\\..\\b"],
)
def test_escaping_names_are_refused(saved: bytes, target: Config, name: str) -> None:
    with pytest.raises(IntegrityError, match="refused member"):
        archive.load(target, io.BytesIO(_with_extra(saved, tarfile.TarInfo(name), b"x")))
    assert_untouched(target)
    assert not (target.home.parent / "evil").exists()


@pytest.mark.parametrize(
    ("kind", "link"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "index.json"), (tarfile.CHRTYPE, ""), (tarfile.FIFOTYPE, "")],
)
def test_links_and_devices_are_refused(saved: bytes, target: Config, kind: bytes, link: str) -> None:
    hexname = "0" * 64
    info = tarfile.TarInfo(f"blobs/sha256/{hexname}")
    info.type = kind
    info.linkname = link
    with pytest.raises(IntegrityError, match="refused member"):
        archive.load(target, io.BytesIO(_with_extra(saved, info)))
    assert_untouched(target)


def test_symlinked_blob_replacing_a_real_one_is_refused(saved: bytes, target: Config) -> None:
    layer = blob_member(saved, GGUF)

    def edit(info: tarfile.TarInfo, data: bytes | None) -> bytes | None:
        if info.name == layer:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            return None
        return data

    with pytest.raises(IntegrityError, match="symbolic link"):
        archive.load(target, io.BytesIO(rewrite(saved, edit)))
    assert_untouched(target)


def test_digest_mismatch_is_one_clear_error_and_loads_nothing(saved: bytes, target: Config) -> None:
    layer = blob_member(saved, GGUF)
    bad = rewrite(saved, lambda info, data: GGUF[:-1] + b"!" if info.name == layer else data)
    with pytest.raises(DigestMismatch) as caught:
        archive.load(target, io.BytesIO(bad))
    message = str(caught.value)
    assert "\n" not in message and layer.rsplit("/", 1)[1] in message and "nothing was loaded" in message
    assert_untouched(target)


def test_mismatch_after_good_blobs_commits_none_of_them(saved: bytes, target: Config) -> None:
    """The corrupt blob comes last: the blobs before it were verified, staged, and then dropped."""
    items = members(saved)
    layer = blob_member(saved, GGUF)
    items = [i for i in items if i[0].name != layer] + [(tarfile.TarInfo(layer), GGUF + b"?")]
    with pytest.raises(DigestMismatch):
        archive.load(target, io.BytesIO(build(items)))
    assert_untouched(target)


@pytest.mark.parametrize("where", ["header", "index", "layer-start", "layer-end", "card"])
def test_truncated_archive(saved: bytes, target: Config, where: str) -> None:
    layer = saved.index(GGUF)
    cut = {
        "header": 100,
        "index": saved.index(b'{"schemaVersion"') + 20,
        "layer-start": layer + 5,
        "layer-end": layer + len(GGUF) - 1,
        "card": saved.index(CARD) + 3,
    }[where]
    with pytest.raises(IntegrityError, match="truncated"):
        archive.load(target, Pipe(saved[:cut]))  # type: ignore[arg-type]
    assert_untouched(target)


def test_archive_cut_after_the_last_member_still_loads(saved: bytes, target: Config) -> None:
    """The end-of-archive zero blocks are padding: without them every member is still complete."""
    assert archive.load(target, io.BytesIO(saved[:-1024])).models[0].reference == NAME


def test_not_a_tar(target: Config) -> None:
    with pytest.raises(IntegrityError, match="not a tar"):
        archive.load(target, io.BytesIO(b"hello, this is not a tar archive" * 40))
    assert_untouched(target)


def test_missing_blob(saved: bytes, target: Config) -> None:
    layer = blob_member(saved, GGUF)
    items = [i for i in members(saved) if i[0].name != layer]
    with pytest.raises(IntegrityError, match="missing blob"):
        archive.load(target, io.BytesIO(build(items)))
    assert_untouched(target)


def test_size_that_disagrees_with_the_descriptor(saved: bytes, target: Config) -> None:
    def edit(info: tarfile.TarInfo, data: bytes | None) -> bytes | None:
        if info.name == "index.json" and data is not None:
            doc = json.loads(data)
            doc["manifests"][0]["size"] += 1
            return json.dumps(doc).encode()
        return data

    with pytest.raises(IntegrityError, match="bytes"):
        archive.load(target, io.BytesIO(rewrite(saved, edit)))
    assert_untouched(target)


def test_no_index_and_unnamed_index(saved: bytes, target: Config) -> None:
    without = [i for i in members(saved) if i[0].name != "index.json"]
    with pytest.raises(IntegrityError, match=r"no index\.json"):
        archive.load(target, io.BytesIO(build(without)))

    def unname(info: tarfile.TarInfo, data: bytes | None) -> bytes | None:
        if info.name == "index.json" and data is not None:
            doc = json.loads(data)
            for entry in doc["manifests"]:
                entry.pop("annotations", None)
            return json.dumps(doc).encode()
        return data

    with pytest.raises(UsageError, match="names no model") as caught:
        archive.load(target, io.BytesIO(rewrite(saved, unname)))
    assert "--name" in str(caught.value)
    assert_untouched(target)


def test_hostile_index_entries(saved: bytes, target: Config) -> None:
    for entry in (
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:../../x", "size": 1},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1, "annotations": {mt.REF_NAME: "a b"}},
    ):
        items = [
            (i, json.dumps({"manifests": [entry]}).encode() if i.name == "index.json" else d) for i, d in members(saved)
        ]
        with pytest.raises(IntegrityError):
            archive.load(target, io.BytesIO(build(items)))
        assert_untouched(target)


def test_bad_blob_names(saved: bytes, target: Config) -> None:
    with pytest.raises(IntegrityError, match="not a sha256 blob name"):
        archive.load(target, io.BytesIO(_with_extra(saved, tarfile.TarInfo("blobs/sha256/XYZ"), b"x")))
    with pytest.raises(IntegrityError, match="not a sha512 blob name"):
        archive.load(target, io.BytesIO(_with_extra(saved, tarfile.TarInfo("blobs/sha512/" + "0" * 64), b"x")))
    with pytest.raises(DigestMismatch):  # a sha512 name is checked with sha512
        archive.load(target, io.BytesIO(_with_extra(saved, tarfile.TarInfo("blobs/sha512/" + "0" * 128), b"x")))
    with pytest.raises(IntegrityError, match="unsupported blob"):
        archive.load(target, io.BytesIO(_with_extra(saved, tarfile.TarInfo("blobs/sha384/" + "0" * 96), b"x")))
    assert_untouched(target)


# -- names: index.json's ref.name and load --name (issue 14 item 7) -------------------------------------------


def renamed(saved: bytes, name: str | None) -> bytes:
    """``saved`` with the model's ref.name set to ``name`` (None: removed), the card's entry left unnamed."""

    def edit(info: tarfile.TarInfo, data: bytes | None) -> bytes | None:
        if info.name != "index.json" or data is None:
            return data
        doc = json.loads(data)
        for entry in doc["manifests"]:
            if mt.REF_NAME in entry.get("annotations", {}):
                if name is None:
                    del entry["annotations"]
                else:
                    entry["annotations"][mt.REF_NAME] = name
        return json.dumps(doc).encode()

    return rewrite(saved, edit)


def loaded(cfg: Config) -> list[str]:
    return sorted(name for name, _ in Layout(cfg.store_dir).entries())


def test_a_tag_only_name_needs_a_repository(saved: bytes, target: Config) -> None:
    skopeo_style = renamed(saved, "v1")  # skopeo copy ... oci-archive:FILE:v1
    with pytest.raises(UsageError, match="only by the tag 'v1'") as caught:
        archive.load(target, io.BytesIO(skopeo_style))
    assert "--name REPOSITORY" in str(caught.value) and "\n" not in str(caught.value)
    assert_untouched(target)
    result = archive.load(target, io.BytesIO(skopeo_style), as_name="ai/tiny")
    assert [m.reference for m in result.models] == ["docker.io/ai/tiny:v1"] and result.referrers == 1
    assert loaded(target) == ["docker.io/ai/tiny:v1"]


@pytest.mark.parametrize(
    ("ref_name", "as_name", "expected"),
    [
        (NAME, "ai/other", "docker.io/ai/other:1"),  # a repository: the entry keeps its own tag
        (NAME, "reg.example:5000/team/m:v2", "reg.example:5000/team/m:v2"),  # one reference
        ("v1", "ai/tiny:latest", "docker.io/ai/tiny:latest"),
        (None, "ai/unnamed:x", "docker.io/ai/unnamed:x"),  # skopeo's oci-archive:FILE without a name
        (None, "ai/unnamed", "docker.io/ai/unnamed:latest"),
    ],
)
def test_load_as_name(saved: bytes, target: Config, ref_name: str | None, as_name: str, expected: str) -> None:
    result = archive.load(target, io.BytesIO(renamed(saved, ref_name)), as_name=as_name)
    assert [m.reference for m in result.models] == [expected]
    assert result.referrers == 1  # the card stays attached; an unnamed archive's card is not taken for the model
    assert loaded(target) == [expected]


def test_a_name_for_one_model_refuses_an_archive_of_two(tmp_path: Path, target: Config) -> None:
    cfg = home_config(tmp_path / "two")
    write_model(Layout(cfg.store_dir))
    write_model(Layout(cfg.store_dir), "docker.io/ai/tiny:2", card=False)
    out = io.BytesIO()
    archive.save(cfg, ["ai/tiny:1", "ai/tiny:2"], out)
    with pytest.raises(UsageError, match="holds 2 tagged models"):
        archive.load(target, io.BytesIO(out.getvalue()), as_name="ai/x:1")
    assert_untouched(target)
    result = archive.load(target, io.BytesIO(out.getvalue()), as_name="ai/x")
    assert sorted(m.reference for m in result.models) == ["docker.io/ai/x:1", "docker.io/ai/x:2"]


@pytest.mark.parametrize("as_name", ["ai/x@sha256:" + "0" * 64, "Not A Name", "ai/x:bad tag"])
def test_a_bad_name_is_a_usage_error_before_reading(target: Config, as_name: str) -> None:
    class Unread(io.RawIOBase):
        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            raise AssertionError("read the archive before checking --name")

    with pytest.raises(UsageError):
        archive.load(target, Unread(), as_name=as_name)


def test_a_deeply_nested_index_is_refused(saved: bytes, target: Config) -> None:
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    data = rewrite(saved, lambda info, content: deep if info.name == "index.json" else content)
    with pytest.raises(IntegrityError, match="nests deeper than 64 levels"):
        archive.load(target, io.BytesIO(data))
    assert_untouched(target)


def test_a_huge_pax_header_is_refused_before_it_is_read(target: Config) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = (1 << 33) - 1  # tarfile would read this much into memory
    data = header.tobuf(format=tarfile.USTAR_FORMAT) + bytes(4096)
    with pytest.raises(IntegrityError, match="tar header of 8589934591 bytes"):
        archive.load(target, io.BytesIO(data))
    assert_untouched(target)


def test_too_many_members(saved: bytes, target: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["modelctl.services.archive.load"], "MAX_MEMBERS", 5)
    with pytest.raises(IntegrityError, match="more than 5 members"):
        archive.load(target, io.BytesIO(saved))
    assert_untouched(target)


@pytest.mark.parametrize("config", [b"[1, 2]", b"not json", b'{"config": {"quantization": 5}}'])
def test_a_model_whose_config_does_not_read_is_refused_and_loads_nothing(
    tmp_path: Path, target: Config, config: bytes
) -> None:
    """Every digest matches, but the config is not a model config: a pull refuses such a model (exit 5), so load
    does too, before anything is committed (before, it was tagged and then failed in ``list`` and ``run``)."""
    store = Layout(home_config(tmp_path / "bad").store_dir)
    write_model(store, card=False, config=config)  # save would refuse it: the store is packed by hand
    files = [store.root / "oci-layout", store.index_path, *sorted(store.algorithm_dir().iterdir())]
    items = [(tarfile.TarInfo(str(f.relative_to(store.root))), f.read_bytes()) for f in files]
    with pytest.raises(IntegrityError) as exc:
        archive.load(target, io.BytesIO(build(items)), name="bad.tar")
    assert exc.value.message.startswith(f"bad.tar: {NAME}: malformed model config")
    assert "nothing was loaded" in str(exc.value.hint)
    assert_untouched(target)
