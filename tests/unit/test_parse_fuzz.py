"""Hostile input for every parser of what comes from outside: each answers a value or its one typed error.

One property per parser, :data:`helpers.fuzz.EXAMPLES` derandomized cases each (2,000 by default), traced memory
under 100 MiB: manifests and indexes, model configs, registry answers (error bodies, listings), token answers,
archives (tar members and index.json, through ``load``), model card front matter. GGUF headers are in
``test_gguf_fuzz.py``. The inputs are valid documents mutated: subtrees replaced by random JSON, hostile raw values
spliced in (``{"a":`` x 50,000, 65 levels, 5,000-digit integers, UTF-16, lone surrogates, 30,000 objects), keys
deleted, bytes truncated, flipped and inserted. docs/reliability.md lists the counts.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.fuzz import DEEP, FUZZ, Peak, apply, apply_bytes, edit_json, mutations
from hypothesis import given
from hypothesis import strategies as st

from modelctl import artifact, cards
from modelctl import config as _config
from modelctl import digest as _digest
from modelctl.errors import CardError, IntegrityError, ModelctlError, RegistryError, UsageError
from modelctl.oci import descriptor, transport
from modelctl.oci import mediatypes as mt
from modelctl.oci.auth import token_answer
from modelctl.oci.descriptor import Descriptor, Index, Manifest
from modelctl.services import archive
from modelctl.store import Layout
from modelctl.store.directory import blob_files

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha512:" + "c" * 128


def one_line(exc: ModelctlError) -> None:
    text = str(exc)
    assert text and "\n" not in text, text
    assert len(text) < 4000, len(text)


# -- manifests and indexes ----------------------------------------------------------------------------------

MANIFEST_SEEDS: list[dict[str, Any]] = [
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": D1, "size": 300},
        "layers": [
            {"mediaType": mt.DOCKER_GGUF, "digest": D2, "size": 1 << 30, "annotations": {mt.FILEPATH: "m.gguf"}},
            {"mediaType": mt.DOCKER_LICENSE, "digest": D3, "size": 11},
        ],
        "annotations": {"org.opencontainers.image.created": "2025-01-01T00:00:00Z"},
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.MODELPACK_MANIFEST,
        "config": {"mediaType": mt.MODELPACK_CONFIG, "digest": D1, "size": 200},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": D2, "size": 9}],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 500},
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.OLLAMA_CONFIG, "digest": D1, "size": 100},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": D2, "size": 5}],
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 500, "platform": {"os": "linux"}},
            {"mediaType": mt.OCI_MANIFEST, "digest": D2, "size": 400, "annotations": {mt.REF_NAME: "v1"}},
        ],
    },
]


HEADERS = [None, mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, "text/plain"]
Changes = list[tuple[int, int, int]]


def test_manifests_and_indexes() -> None:
    meter = Peak()

    @FUZZ
    @given(seed=st.sampled_from(MANIFEST_SEEDS), changes=mutations(), header=st.sampled_from(HEADERS))
    def check(seed: dict[str, Any], changes: Changes, header: str | None) -> None:
        raw = apply(seed, changes)
        try:
            doc = meter.call(descriptor.parse, raw, header)
        except IntegrityError as exc:
            one_line(exc)
            return
        assert isinstance(doc, Manifest | Index) and doc.digest == _digest.of_bytes(raw)
        descriptors = doc.manifests if isinstance(doc, Index) else (doc.config, *doc.layers, *doc.blobs)
        for desc in descriptors:
            assert isinstance(desc.size, int) and desc.size >= 0
            json.dumps(desc.to_json())
        if isinstance(doc, Manifest):
            try:
                artifact.classify(doc)
                for i, layer in enumerate(doc.layers):
                    assert not artifact.file_name(layer, i).startswith("/")
            except IntegrityError as exc:
                one_line(exc)

    check()
    meter.check()


# -- model configs --------------------------------------------------------------------------------------------

DOCKER_CONFIG = {
    "config": {
        "format": "gguf",
        "quantization": "Q4_K_M",
        "parameters": "8.03 B",
        "architecture": "llama",
        "size": "4.58GiB",
        "context_size": 8192,
        "gguf": {"general.architecture": "llama", "llama.context_length": "131072"},
    },
    "descriptor": {"created": "2025-01-01T00:00:00Z"},
    "rootfs": {"type": "rootfs", "diff_ids": [D2]},
}
MODELPACK_CONFIG = {
    "descriptor": {"createdAt": "2025-01-01T00:00:00Z", "name": "m", "family": "llama"},
    "config": {"architecture": "llama", "format": "gguf", "paramSize": "8B", "quantization": "Q4_0"},
    "modelfs": {"type": "layers", "diffIds": [D2]},
}
OLLAMA_CONFIG = {"model_format": "gguf", "model_family": "llama", "file_type": "Q4_0", "rootfs": {"type": "layers"}}
CONFIG_SEEDS = [
    (MANIFEST_SEEDS[0], DOCKER_CONFIG),
    (MANIFEST_SEEDS[1], MODELPACK_CONFIG),
    (MANIFEST_SEEDS[2], OLLAMA_CONFIG),
]


def test_model_configs() -> None:
    meter = Peak()

    manifests = [descriptor.parse(json.dumps(doc).encode()) for doc, _ in CONFIG_SEEDS]

    @FUZZ
    @given(which=st.integers(0, len(CONFIG_SEEDS) - 1), changes=mutations())
    def check(which: int, changes: Changes) -> None:
        manifest, raw = manifests[which], apply(CONFIG_SEEDS[which][1], changes)
        assert isinstance(manifest, Manifest)
        try:
            model = meter.call(artifact.from_manifest, manifest, raw)
        except IntegrityError as exc:
            one_line(exc)
            return
        assert model.context_size is None or model.context_size > 0
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in model.gguf_metadata.items())
        for text in (model.parameters, model.quantization, model.architecture, model.created):
            assert text is None or isinstance(text, str)

    check()
    meter.check()


# -- registry answers: error bodies and listings ---------------------------------------------------------------

ANSWER_SEEDS: list[dict[str, Any]] = [
    {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "x"}}]},
    {"name": "ai/x", "tags": ["1", "latest", "8B-Q4_K_M"]},
    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []},
    {"repositories": ["ai/x", "ai/y"]},
]


def test_registry_answers() -> None:
    request = httpx.Request("GET", "https://reg.test/v2/ai/x/tags/list")
    meter = Peak()

    @FUZZ
    @given(seed=st.sampled_from(ANSWER_SEEDS), changes=mutations())
    def check(seed: dict[str, Any], changes: Changes) -> None:
        body = apply(seed, changes)
        codes, detail = meter.call(transport.parse_errors, body)  # never raises: it only decorates an error
        assert all(isinstance(c, str) for c in codes) and isinstance(detail, str)
        try:
            response = httpx.Response(200, content=body, request=request)
            doc, _ = meter.call(transport.json_page, response, 1 << 20, what="tag list")
        except IntegrityError as exc:
            one_line(exc)
            return
        assert isinstance(doc, dict)

    check()
    meter.check()


# -- token answers -----------------------------------------------------------------------------------------

TOKEN_SEEDS: list[dict[str, Any]] = [
    {"token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "expires_in": 300, "issued_at": "2025-01-01T00:00:00Z"},
    {"access_token": "abc", "token": "", "expires_in": 60.5},
]


def test_token_answers() -> None:
    meter = Peak()

    @FUZZ
    @given(seed=st.sampled_from(TOKEN_SEEDS), changes=mutations())
    def check(seed: dict[str, Any], changes: Changes) -> None:
        body = apply(seed, changes)
        try:
            token, lifetime = meter.call(token_answer, body, "reg.test")
        except RegistryError as exc:
            one_line(exc)
            assert not exc.temporary
            return
        assert token and token.isascii() and token.isprintable()  # safe in an Authorization header
        assert 0 < lifetime < 400 * 86400

    check()
    meter.check()


# -- archives: tar members and index.json, through load ---------------------------------------------------------

MODEL = "docker.io/ai/tiny:1"


def _saved_archive(root: Path) -> bytes:
    """``modelctl save`` of a tiny model with a model card attached (six blobs)."""
    cfg = _config.from_env({"MODELCTL_HOME": str(root)})
    store = Layout(cfg.store_dir)
    store.ensure()
    layer = store.write_blob(b"GGUF" + bytes(range(256)) * 4)
    config_raw = json.dumps(DOCKER_CONFIG).encode()
    config_digest = store.write_blob(config_raw)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config_raw)},
            "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": layer, "size": 1028}],
        }
    ).encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=store.write_blob(manifest), size=len(manifest))
    store.tag(MODEL, desc)
    card = b"# tiny\n"
    referrer = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.MODEL_CARD_ARTIFACT,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": store.write_blob(b"{}"), "size": 2},
        "layers": [{"mediaType": mt.MODEL_CARD_LAYER, "digest": store.write_blob(card), "size": len(card)}],
        "subject": desc.to_json(),
    }
    store.write_blob(json.dumps(referrer).encode())
    out = io.BytesIO()
    archive.save(cfg, [MODEL], out)
    return out.getvalue()


@functools.cache
def _members(data: bytes) -> tuple[tuple[tarfile.TarInfo, bytes | None], ...]:
    """The archive's members (shared: copy a TarInfo before changing it)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tuple((m, f.read() if (f := tar.extractfile(m)) else None) for m in tar.getmembers())


def _build(items: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            if data is not None and info.size != len(data):
                info = copy.copy(info)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


HOSTILE_NAMES = ["../x", "/etc/x", "blobs/sha256/../../x", "blobs/sha256/XYZ", "blobs/sha384/" + "0" * 96, "C:x"]
MEMBER_TYPES = [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.DIRTYPE, b"Z"]
AS_NAMES = [None, None, "ai/renamed", "ai/renamed:x"]
INDEX, MEMBER, BYTES = range(3)
NAME, TYPE, CONTENT, DROP, DUPLICATE = range(5)


def mutated_archive(saved: bytes, kind: int, at: int, change: int, pick: int, changes: Changes) -> bytes:
    """``saved`` with its index.json mutated (INDEX), one member renamed, retyped, changed, dropped or duplicated
    (MEMBER), or its bytes changed (BYTES)."""
    if kind == BYTES:
        return apply_bytes(saved, changes)
    items = list(_members(saved))
    if kind == INDEX:
        at = next(i for i, (m, _) in enumerate(items) if m.name == "index.json")
        items[at] = (copy.copy(items[at][0]), apply(json.loads(items[at][1] or b""), changes))
        return _build(items)
    at %= len(items)
    info, content = copy.copy(items[at][0]), items[at][1]
    if change == NAME:
        info.name = HOSTILE_NAMES[pick % len(HOSTILE_NAMES)]
    elif change == TYPE:
        info.type = MEMBER_TYPES[pick % len(MEMBER_TYPES)]
        info.linkname = "../../etc/passwd"
        content = None
    elif change == CONTENT and content is not None:
        content = apply_bytes(content, changes)
    items[at] = (info, content)
    if change == DROP:
        del items[at]
    elif change == DUPLICATE:
        items.insert(at, (copy.copy(info), content))
    return _build(items)


def _store_state(cfg: _config.Config) -> tuple[list[str], list[str]]:
    store = Layout(cfg.store_dir)
    tags = sorted(n for n, _ in store.entries()) if store.index_path.exists() else []
    return tags, sorted(d for d, _ in blob_files(store.blobs_dir))


def test_archives(tmp_path_factory: pytest.TempPathFactory) -> None:
    saved = _saved_archive(tmp_path_factory.mktemp("saved"))
    cfg = _config.from_env({"MODELCTL_HOME": str(tmp_path_factory.mktemp("target"))})
    meter = Peak()

    @FUZZ
    @given(
        kind=st.integers(INDEX, BYTES),
        at=st.integers(0, 20),
        change=st.integers(NAME, DUPLICATE),
        pick=st.integers(0, 20),
        changes=mutations(),
        as_name=st.sampled_from(AS_NAMES),
    )
    def check(kind: int, at: int, change: int, pick: int, changes: Changes, as_name: str | None) -> None:
        data = mutated_archive(saved, kind, at, change, pick, changes)
        before = _store_state(cfg)
        try:
            result = meter.call(archive.load, cfg, io.BytesIO(data), as_name=as_name)
        except (IntegrityError, UsageError) as exc:
            one_line(exc)
            assert _store_state(cfg) == before, "a refused archive changed the store"
            return
        assert all(m.reference in _store_state(cfg)[0] for m in result.models)

    check()
    meter.check()
    leftovers = [p.name for p in (cfg.store_dir / ".tmp").iterdir() if p.name.startswith("load.")]
    assert leftovers == []


# -- model card front matter ----------------------------------------------------------------------------------

_BUNDLED = cards.bundled_text("ai/smollm2")
assert _BUNDLED is not None
CARD_FRONT, CARD_BODY = cards.split(_BUNDLED[0], source="smollm2")
CARD_DOC = yaml.safe_load(CARD_FRONT)
YAML_SNIPPETS = [
    "a: " + "[" * 999 + "]" * 999,
    "a: " + "[" * 1000 + "]" * 1000,
    "cutoff: 2020-02-30",
    "x: !!int z",
    "x: !!timestamp nope",
    "x: !!binary a",
    "x: !!python/object:os.system x",
    "x: &a [*a, *a]",
    "? [a]\n: 1",
    "<<: {a: 1}",
    "\t- tab",
    "---",
    "a: b: c",
    "x: " + "9" * 5000,
    "x: 1e99999",
    "x: \U0001f600\u202e",
]


LINE_OPS = ("insert", "drop", "duplicate", "indent", "dedent")


def mutated_card(structural: bool, changes: Changes, line_changes: list[tuple[int, int, int]]) -> str:
    """The smollm2 card with its front matter changed as data (written back as YAML) or as lines (dropped,
    duplicated, re-indented, hostile ones inserted), then its bytes (UTF-8 errors replaced)."""
    if structural:
        front = yaml.dump(edit_json(CARD_DOC, changes), Dumper=yaml.CSafeDumper, allow_unicode=True)
    else:
        lines = CARD_FRONT.splitlines()
        for op, at, pick in line_changes:
            at %= len(lines) + 1
            kind = LINE_OPS[op % len(LINE_OPS)]
            if kind == "insert":
                lines.insert(at, YAML_SNIPPETS[pick % len(YAML_SNIPPETS)])
            elif at < len(lines):
                if kind == "drop":
                    del lines[at]
                elif kind == "duplicate":
                    lines.insert(at, lines[at])
                else:
                    lines[at] = "  " + lines[at] if kind == "indent" else lines[at].lstrip()
        front = "\n".join(lines) + "\n"
    data = apply_bytes(front.encode(), [c for c in changes if c[0] >= 3][:1] if not structural else [])
    return f"---\n{data.decode('utf-8', 'replace')}---\n{CARD_BODY}"


def test_card_front_matter() -> None:
    meter = Peak()

    @FUZZ
    @given(structural=st.booleans(), changes=mutations(), line_changes=mutations(3))
    def check(structural: bool, changes: Changes, line_changes: Changes) -> None:
        text = mutated_card(structural, changes, line_changes)
        try:
            card = meter.call(cards.parse, text, source="card.md")
        except CardError as exc:
            one_line(exc)
            return
        json.dumps(card.to_json())

    check()
    meter.check()


def test_the_issue_case_is_one_typed_line() -> None:
    """``{"a":`` x 50,000 to each JSON parser: the typed error naming the depth, not a RecursionError."""
    manifest = descriptor.parse(json.dumps(MANIFEST_SEEDS[0]).encode())
    assert isinstance(manifest, Manifest)
    for parse, error in (
        (descriptor.parse, IntegrityError),
        (lambda raw: artifact.from_manifest(manifest, raw), IntegrityError),
        (lambda raw: token_answer(raw, "reg.test"), RegistryError),
    ):
        with pytest.raises(error, match="nests deeper than 64 levels") as caught:
            parse(DEEP)
        one_line(caught.value)
