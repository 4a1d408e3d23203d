"""One Model view over Docker, ModelPack and Ollama artifacts, checked against real published documents."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl import artifact, digest
from modelctl.errors import IntegrityError, UnsupportedFormat
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Manifest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "manifests"


def load(name: str) -> Manifest:
    doc = descriptor.parse((FIXTURES / name).read_bytes())
    assert isinstance(doc, Manifest)
    return doc


def layer(media_type: str, seed: str, size: int = 10, ann: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "digest": digest.of_bytes(seed.encode()), "size": size}
    if ann:
        out["annotations"] = ann
    return out


def manifest(
    config_type: str, layers: list[dict[str, Any]], config: bytes = b"{}", artifact_type: str | None = None
) -> Manifest:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": digest.of_bytes(config), "size": len(config)},
        "layers": layers,
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    parsed = descriptor.parse(json.dumps(doc).encode())
    assert isinstance(parsed, Manifest)
    return parsed


def docker_config(**config: Any) -> bytes:
    return json.dumps(
        {
            "config": {"format": "gguf", **config},
            "descriptor": {"created": "2025-04-01T10:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": []},
        }
    ).encode()


OLLAMA_CONFIG = json.dumps(
    {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "8.0B",
        "file_type": "Q4_0",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }
).encode()

MODCTL_CONFIG = json.dumps(
    {
        "descriptor": {"createdAt": "2025-02-10T08:00:00Z", "name": "qwen2.5-0.5b", "family": "qwen2"},
        "config": {"architecture": "transformer", "format": "safetensors", "paramSize": "0.5b"},
        "modelfs": {"type": "layers", "diffIds": []},
    }
).encode()

# Every fixture document, and the test that parses it (test_every_fixture_is_used checks this table).
USED = {
    "docker/spec-example-tinyllama.v0.1.manifest.json": "test_docker_tinyllama_spec_example",
    "docker/prerelease-v1.config.json": "test_prerelease_docker_artifacts_are_refused",
    "docker/prerelease-earliest.config.json": "test_prerelease_docker_artifacts_are_refused",
    "modelpack/spec-example.manifest.json": "test_modelpack_spec_example",
    "modelpack/spec-example.config.json": "test_modelpack_spec_example",
    "modelpack/modctl-qwen2.5-0.5b.cnai.manifest.json": "test_modelpack_cnai_spelling",
    "ollama/gemma-2b.manifest.json": "test_ollama_manifests",
    "ollama/llama3-latest.manifest.json": "test_ollama_manifests",
    "ollama/llama3-latest.wire-order.manifest.json": "test_ollama_manifests",
    "ollama/llama3.1-latest.manifest.json": "test_ollama_manifests",
    "ollama/llama3.2-latest.manifest.json": "test_ollama_manifests",
}


def test_every_fixture_is_used() -> None:
    files = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json")}
    assert files == set(USED)
    assert all(name in globals() for name in USED.values())


# -- Docker --------------------------------------------------------------------------------------------------


def test_docker_tinyllama_spec_example() -> None:
    m = load("docker/spec-example-tinyllama.v0.1.manifest.json")
    assert artifact.classify(m) == "docker"
    config = docker_config(quantization="Q4_0", parameters="1.10 B", architecture="llama", size="608.16 MiB")
    model = artifact.from_manifest(m, config)
    assert model.format == "docker" and model.manifest_digest == m.digest
    assert [d.media_type for d in model.gguf] == [mt.DOCKER_GGUF]
    assert [d.size for d in model.licenses] == [13]
    assert model.mmproj is None and model.chat_template is None and model.other == ()
    assert model.weights_size == 637699456 and model.size == 637699456 + 13
    assert (model.parameters, model.quantization, model.architecture) == ("1.10B", "Q4_0", "llama")
    assert model.created == "2025-04-01T10:00:00Z" and model.context_size is None
    assert artifact.file_name(model.gguf[0], 0) == "model.gguf"
    assert artifact.file_name(model.licenses[0], 1) == "LICENSE"


@pytest.mark.parametrize(
    "fixture", ["docker/prerelease-v1.config.json", "docker/prerelease-earliest.config.json"]
)
def test_prerelease_docker_artifacts_are_refused(fixture: str) -> None:
    config = (FIXTURES / fixture).read_bytes()
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    layers = [{"mediaType": mt.DOCKER_PRERELEASE_FILE, "digest": d, "size": 864} for d in diff_ids]
    m = manifest(mt.DOCKER_MODEL_CONFIG_PRERELEASE, layers, config)
    assert m.config.digest == digest.of_bytes(config)
    for call in (lambda: artifact.classify(m), lambda: artifact.from_manifest(m, config)):
        with pytest.raises(UnsupportedFormat) as info:
            call()
        assert info.value.message == f"unsupported model format {mt.DOCKER_MODEL_CONFIG_PRERELEASE}"
        assert info.value.hint and "re-package" in info.value.hint
        assert info.value.exit_code == 5
    # a current config over pre-release layers is the same artifact generation: refused too
    with pytest.raises(UnsupportedFormat, match="unsupported model format"):
        artifact.classify(manifest(mt.DOCKER_MODEL_CONFIG_V01, layers, config))


def test_docker_config_details() -> None:
    config = docker_config(
        quantization="IQ2_XXS/Q4_K_M",
        parameters="361.82 M",
        size="256.35 MiB",
        context_size=8192,
        gguf={"general.architecture": "llama", "llama.context_length": "131072", "general.file_type": 15},
    )
    layers = [
        layer(mt.DOCKER_GGUF, "w"),
        layer(mt.DOCKER_MMPROJ_OLD, "mm"),
        layer(mt.DOCKER_CHAT_TEMPLATE, "tpl"),
        layer(mt.DOCKER_LICENSE, "l1"),
        layer(mt.DOCKER_LICENSE, "l2"),
        layer(mt.DOCKER_DDUF, "dduf"),
        layer(mt.DOCKER_MODEL_FILE, "file"),
    ]
    model = artifact.from_manifest(manifest(mt.DOCKER_MODEL_CONFIG_V01, layers, config), config)
    assert model.parameters == "361.82M" and model.quantization == "IQ2_XXS/Q4_K_M"
    assert model.architecture == "llama"  # from the gguf map when the config has none
    assert model.context_size == 8192
    assert (
        model.gguf_metadata["llama.context_length"] == "131072"
        and model.gguf_metadata["general.file_type"] == "15"
    )
    assert model.mmproj is not None and model.chat_template is not None and len(model.licenses) == 2
    assert [d.media_type for d in model.other] == [mt.DOCKER_DDUF, mt.DOCKER_MODEL_FILE]
    assert model.config["config"]["size"] == "256.35 MiB"
    new_mmproj = artifact.from_manifest(
        manifest(mt.DOCKER_MODEL_CONFIG_V01, [layer(mt.DOCKER_GGUF, "w"), layer(mt.DOCKER_MMPROJ, "mm")]),
        config,
    )
    assert new_mmproj.mmproj is not None and new_mmproj.mmproj.media_type == mt.DOCKER_MMPROJ


def test_docker_sharded_gguf_keeps_manifest_order_without_annotations() -> None:
    layers = [layer(mt.DOCKER_GGUF, f"shard{i}", size=i) for i in (1, 2, 3)]
    model = artifact.from_manifest(manifest(mt.DOCKER_MODEL_CONFIG_V01, layers), docker_config())
    assert [d.size for d in model.gguf] == [1, 2, 3] and model.weights_size == 6


@given(st.permutations([1, 2, 3, 4, 10]))
def test_sharded_gguf_sorted_by_shard_number_when_shuffled(order: list[int]) -> None:
    def shard(n: int, media_type: str, key: str) -> dict[str, Any]:
        return layer(media_type, f"s{n}", size=n, ann={key: f"weights/Model-Q4-{n:05d}-of-00010.gguf"})

    for config_type, media_type, key, config in (
        (mt.DOCKER_MODEL_CONFIG_V02, mt.DOCKER_GGUF, mt.FILEPATH, docker_config()),
        (mt.MODELPACK_CONFIG, "application/vnd.cncf.model.weight.v1.raw", mt.FILEPATH, b"{}"),
        (
            "application/vnd.cnai.model.config.v1+json",
            "application/vnd.cnai.model.weight.v1.raw",
            mt.FILEPATH_CNAI,
            b"{}",
        ),
    ):
        layers = [shard(n, media_type, key) for n in order]
        model = artifact.from_manifest(manifest(config_type, layers, config), config)
        assert [d.size for d in model.gguf] == [1, 2, 3, 4, 10]


def test_docker_safetensors_model_has_no_gguf() -> None:
    config = json.dumps({"config": {"format": "safetensors"}}).encode()
    layers = [
        layer(mt.DOCKER_SAFETENSORS, "a", ann={mt.FILEPATH: "model-00001-of-00002.safetensors"}),
        layer(mt.DOCKER_SAFETENSORS, "b", ann={mt.FILEPATH: "model-00002-of-00002.safetensors"}),
        layer(mt.DOCKER_MODEL_FILE, "c", ann={mt.FILEPATH: "config.json"}),
    ]
    model = artifact.from_manifest(manifest(mt.DOCKER_MODEL_CONFIG_V02, layers), config)
    assert model.gguf == () and model.weights_size == 0 and len(model.other) == 3
    assert [artifact.file_name(d, i) for i, d in enumerate(model.other)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "config.json",
    ]


# -- ModelPack -----------------------------------------------------------------------------------------------


def test_modelpack_spec_example() -> None:
    m = load("modelpack/spec-example.manifest.json")
    config = (FIXTURES / "modelpack/spec-example.config.json").read_bytes()
    assert artifact.classify(m) == "modelpack"
    model = artifact.from_manifest(m, config)
    assert model.format == "modelpack"
    assert model.gguf == ()  # tar-packed PyTorch weights: recognised, not loadable
    assert len(model.other) == 4 and model.licenses == ()
    assert (model.parameters, model.quantization, model.architecture) == ("8b", "gptq", "transformer")
    assert model.created == "2025-01-01T00:00:00Z"
    assert model.size == 30327160 + 5018536960 + 106 + 23040
    assert artifact.file_name(model.other[0], 0) == "layer-0.tar"


def test_modelpack_cnai_spelling() -> None:
    m = load("modelpack/modctl-qwen2.5-0.5b.cnai.manifest.json")
    assert m.artifact_type == "application/vnd.cnai.model.manifest.v1+json"
    assert artifact.classify(m) == "modelpack"
    model = artifact.from_manifest(m, MODCTL_CONFIG)
    assert model.gguf == () and len(model.other) == 8
    assert model.parameters == "0.5b" and model.created == "2025-02-10T08:00:00Z"
    names = [artifact.file_name(d, i) for i, d in enumerate(m.layers)]
    assert names[:4] == ["LICENSE", "README.md", "config.json", "foo/bar.json"]


def test_modelpack_gguf_weights() -> None:
    layers = [
        layer("application/vnd.cncf.model.doc.v1.raw", "lic", ann={mt.FILEPATH: "LICENSE.txt"}),
        layer("application/vnd.cncf.model.doc.v1.raw", "readme", ann={mt.FILEPATH: "README.md"}),
        layer(
            "application/vnd.cncf.model.weight.v1.raw", "w", size=100, ann={mt.FILEPATH: "qwen-q4_k_m.gguf"}
        ),
        layer("application/vnd.cncf.model.weight.v1.raw", "mm", ann={mt.FILEPATH: "mmproj-qwen-f16.gguf"}),
        layer("application/vnd.cncf.model.weight.config.v1.raw", "cfg", ann={mt.FILEPATH: "config.json"}),
    ]
    config = json.dumps(
        {
            "descriptor": {"createdAt": "2025-05-05T00:00:00Z"},
            "config": {"paramSize": "0.5B", "quantization": "Q4_K_M"},
        }
    ).encode()
    m = manifest("application/vnd.oci.empty.v1+json", layers, config, artifact_type=mt.MODELPACK_MANIFEST)
    model = artifact.from_manifest(m, config)
    assert [artifact.file_name(d, 0) for d in model.gguf] == ["qwen-q4_k_m.gguf"]
    assert model.mmproj is not None and model.mmproj.annotations[mt.FILEPATH] == "mmproj-qwen-f16.gguf"
    assert [d.annotations[mt.FILEPATH] for d in model.licenses] == ["LICENSE.txt"]
    assert [d.annotations[mt.FILEPATH] for d in model.other] == ["README.md", "config.json"]
    assert model.weights_size == 100 and model.quantization == "Q4_K_M"
    # config.format gguf makes an un-suffixed raw weight a GGUF too
    m2 = manifest(mt.MODELPACK_CONFIG, [layer("application/vnd.cncf.model.weight.v1.raw", "w")])
    assert len(artifact.from_manifest(m2, b'{"config": {"format": "GGUF"}}').gguf) == 1
    assert artifact.from_manifest(m2, b'{"config": {"format": "safetensors"}}').gguf == ()


# -- Ollama --------------------------------------------------------------------------------------------------

VERIFIED_IDS = {
    "ollama/llama3.1-latest.manifest.json": "46e0c10c039e",
    "ollama/llama3-latest.manifest.json": "365c0bd3c000",
    "ollama/gemma-2b.manifest.json": "b50d6c999e59",
    "ollama/llama3.2-latest.manifest.json": "a80c4f17acd5",
}


@pytest.mark.parametrize(
    "fixture",
    [
        "ollama/gemma-2b.manifest.json",
        "ollama/llama3-latest.manifest.json",
        "ollama/llama3-latest.wire-order.manifest.json",
        "ollama/llama3.1-latest.manifest.json",
        "ollama/llama3.2-latest.manifest.json",
    ],
)
def test_ollama_manifests(fixture: str) -> None:
    m = load(fixture)
    if fixture in VERIFIED_IDS:  # the copies are byte-exact
        assert m.digest.hex.startswith(VERIFIED_IDS[fixture])
    assert artifact.classify(m) == "ollama"
    model = artifact.from_manifest(m, OLLAMA_CONFIG)
    assert model.format == "ollama"
    assert len(model.gguf) == 1 and model.gguf[0].media_type == mt.OLLAMA_MODEL
    assert model.ollama_template is not None and model.chat_template is None
    assert model.params is not None and model.system is None and model.other == ()
    assert len(model.licenses) == (2 if "llama3.2" in fixture else 1)
    assert (model.parameters, model.quantization, model.architecture) == ("8.0B", "Q4_0", "llama")
    assert model.size == sum(d.size for d in m.layers) and model.weights_size == model.gguf[0].size
    assert artifact.file_name(model.gguf[0], 0) == "model.gguf"


def test_llama3_disk_order_and_wire_order_parse_to_equal_models() -> None:
    disk = load("ollama/llama3-latest.manifest.json")
    wire = load("ollama/llama3-latest.wire-order.manifest.json")
    assert disk.raw != wire.raw and disk.digest != wire.digest
    a = artifact.from_manifest(disk, OLLAMA_CONFIG)
    b = artifact.from_manifest(wire, OLLAMA_CONFIG)
    assert a != b
    assert dataclasses.replace(a, manifest_digest=b.manifest_digest) == b


def test_ollama_config_without_model_fields_is_tolerated() -> None:
    m = load("ollama/gemma-2b.manifest.json")
    model = artifact.from_manifest(m, b'{"architecture":"amd64","os":"linux"}')
    assert (model.parameters, model.quantization, model.architecture, model.created) == (
        None,
        None,
        None,
        None,
    )
    families = artifact.from_manifest(m, b'{"model_families":["gemma"]}')
    assert families.architecture == "gemma"


def test_ollama_projector_adapter_system() -> None:
    layers = [
        layer(mt.OLLAMA_MODEL, "m"),
        layer(mt.OLLAMA_PROJECTOR, "p"),
        layer(mt.OLLAMA_SYSTEM, "s"),
        layer(mt.OLLAMA_PREFIX + "adapter", "a"),
        layer(mt.OLLAMA_PREFIX + "messages", "msg"),
    ]
    model = artifact.from_manifest(manifest(mt.OLLAMA_CONFIG, layers), OLLAMA_CONFIG)
    assert model.mmproj is not None and model.system is not None and len(model.other) == 2


# -- unsupported and malformed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_type", "layers", "named"),
    [
        (
            "application/vnd.example.unknown+json",
            [layer("application/octet-stream", "x")],
            "vnd.example.unknown",
        ),
        (
            mt.OLLAMA_CONFIG,
            [layer("application/vnd.docker.image.rootfs.diff.tar.gzip", "x")],
            "container.image",
        ),
        ("application/vnd.docker.ai.model.config.v0.9+json", [layer(mt.DOCKER_GGUF, "x")], "v0.9"),
    ],
)
def test_unknown_formats_are_named(config_type: str, layers: list[dict[str, Any]], named: str) -> None:
    with pytest.raises(UnsupportedFormat, match=f"unsupported model format .*{named}"):
        artifact.classify(manifest(config_type, layers))


def test_unknown_artifact_type_over_empty_config_is_named() -> None:
    m = manifest(mt.OCI_EMPTY, [layer("text/markdown", "x")], artifact_type="application/vnd.example.thing")
    with pytest.raises(UnsupportedFormat, match=r"application/vnd\.example\.thing"):
        artifact.classify(m)


@pytest.mark.parametrize(
    "config",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"config": []}',
        b'{"config": {"context_size": "big"}}',
        b'{"config": {"context_size": true}}',
        b'{"config": {"context_size": -1}}',
        b'{"config": {"gguf": []}}',
        b'{"config": {"gguf": {"k": [1, 2]}}}',
        b'{"config": {"parameters": {}}}',
        b'{"config": {"quantization": false}}',
        b'{"descriptor": "yesterday"}',
        b'{"descriptor": {"created": 5.5e400}}',
        b'{"descriptor": {"created": 20250101}}',
        b'{"config": {"parameters": 1e400}}',
        b'{"config": {"architecture": 1}}',
    ],
)
def test_malformed_docker_configs_raise_integrity_error(config: bytes) -> None:
    m = manifest(mt.DOCKER_MODEL_CONFIG_V01, [layer(mt.DOCKER_GGUF, "w")])
    with pytest.raises(IntegrityError, match="malformed model config") as info:
        artifact.from_manifest(m, config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "config"),
    [
        ("modelpack", b'{"config": {"paramSize": ["8b"]}}'),
        ("modelpack", b'{"descriptor": []}'),
        ("ollama", b'{"model_type": {"b": 8}}'),
        ("ollama", b'{"file_type": null, "model_family": 3.5, "model_type": true}'),
    ],
)
def test_malformed_other_configs_raise_integrity_error(fmt: str, config: bytes) -> None:
    if fmt == "modelpack":
        m = manifest(mt.MODELPACK_CONFIG, [layer("application/vnd.cncf.model.weight.v1.raw", "w")])
    else:
        m = manifest(mt.OLLAMA_CONFIG, [layer(mt.OLLAMA_MODEL, "w")])
    with pytest.raises(IntegrityError, match="malformed model config"):
        artifact.from_manifest(m, config)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
CONFIG_KEYS = st.sampled_from(
    ["config", "descriptor", "gguf", "context_size", "parameters", "model_type", "format"]
)


@given(
    st.dictionaries(CONFIG_KEYS, JSON | st.dictionaries(CONFIG_KEYS, JSON, max_size=4), max_size=4),
    st.sampled_from([mt.DOCKER_MODEL_CONFIG_V01, mt.MODELPACK_CONFIG, mt.OLLAMA_CONFIG]),
)
def test_any_config_parses_or_raises_integrity_error(doc: dict[str, Any], config_type: str) -> None:
    model_layer = mt.OLLAMA_MODEL if config_type == mt.OLLAMA_CONFIG else mt.DOCKER_GGUF
    m = manifest(config_type, [layer(model_layer, "w")])
    try:
        model = artifact.from_manifest(m, json.dumps(doc).encode())
    except IntegrityError:
        return
    assert model.config == doc


def test_field_order_never_matters() -> None:
    config = docker_config(quantization="Q4_K_M", parameters="8.03B", context_size=4096)
    reordered = json.dumps(dict(reversed(list(json.loads(config).items())))).encode()
    m = manifest(mt.DOCKER_MODEL_CONFIG_V01, [layer(mt.DOCKER_GGUF, "w")])
    assert artifact.from_manifest(m, config) == artifact.from_manifest(m, reordered)


# -- file names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "model.gguf",
        "weights/model-00001-of-00002.gguf",
        "a/b/c.json",
        "..a",
        "a..",
        "...",
        "ä/ß.txt",
        "C",
        "ab:c",
    ],
)
def test_file_name_accepts_relative_paths(name: str) -> None:
    for key in (mt.FILEPATH, mt.FILEPATH_CNAI, mt.TITLE):
        assert (
            artifact.file_name(Descriptor.from_json(layer(mt.DOCKER_GGUF, "x", ann={key: name})), 0) == name
        )


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        ".",
        "./a",
        "a//b",
        "a/",
        "a\\..\\b",
        "\\\\server\\share",
        "a\x00b",
        "a\nb",
        "a\x1b[2Jb",
        "C:/Windows",
        "c:x",
        "x" * 256,
        "a/" * 600,
    ],
)
def test_file_name_rejects_escapes(name: str) -> None:
    with pytest.raises(IntegrityError, match="unsafe file path"):
        artifact.file_name(Descriptor.from_json(layer(mt.DOCKER_GGUF, "x", ann={mt.FILEPATH: name})), 0)
    m = manifest(mt.DOCKER_MODEL_CONFIG_V02, [layer(mt.DOCKER_GGUF, "x", ann={mt.FILEPATH: name})])
    with pytest.raises(IntegrityError):  # refused before anything is downloaded
        artifact.from_manifest(m, docker_config())


def test_filepath_annotation_wins_over_title() -> None:
    desc = layer(
        mt.DOCKER_LICENSE, "x", ann={mt.TITLE: "title.txt", mt.FILEPATH: "LICENSE", mt.FILEPATH_CNAI: "old"}
    )
    assert artifact.file_name(Descriptor.from_json(desc), 3) == "LICENSE"


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (mt.DOCKER_GGUF, "model.gguf"),
        (mt.OLLAMA_MODEL, "model.gguf"),
        (mt.DOCKER_MMPROJ, "mmproj.gguf"),
        (mt.OLLAMA_PROJECTOR, "mmproj.gguf"),
        (mt.DOCKER_LICENSE, "LICENSE"),
        (mt.DOCKER_CHAT_TEMPLATE, "template.jinja"),
        (mt.OLLAMA_TEMPLATE, "template.tmpl"),
        (mt.OLLAMA_PARAMS, "params.json"),
        ("application/vnd.cncf.model.doc.v1.tar+gzip", "layer-7.tar.gz"),
        ("application/octet-stream", "layer-7"),
    ],
)
def test_file_name_defaults(media_type: str, expected: str) -> None:
    assert artifact.file_name(Descriptor.from_json(layer(media_type, "x")), 7) == expected


def test_file_name_shard_default() -> None:
    desc = Descriptor.from_json(layer(mt.DOCKER_GGUF, "x"))
    assert artifact.file_name(desc, 1, shards=(2, 3)) == "model-00002-of-00003.gguf"


SEGMENTS = st.sampled_from(["..", ".", "", "a", "b.gguf", "/", "\\", "\x00", "\n", "C:", "~", " ", "..."])


@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet="./\\a:\x00", max_size=40),
        st.lists(SEGMENTS, max_size=12).map("/".join),
        st.lists(SEGMENTS, max_size=12).map("".join),
    )
)
def test_file_name_never_escapes(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    base = tmp_path_factory.getbasetemp().resolve() / "model"
    desc = Descriptor.from_json(layer(mt.DOCKER_GGUF, "x", ann={mt.FILEPATH: name}))
    try:
        result = artifact.file_name(desc, 0)
    except IntegrityError:
        return
    resolved = Path(base, result).resolve()
    assert resolved.is_relative_to(base) and resolved != base
    assert "\x00" not in result and "\\" not in result
