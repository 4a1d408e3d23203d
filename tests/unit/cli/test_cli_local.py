"""The local commands (list, inspect, path, tag, rm, df) over a store written with the store API; no network."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from modelctl.cli.app import run
from modelctl.digest import of_bytes
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout


def invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["modelctl", *args])
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def add_model(store: Layout, name: str, shards: list[bytes], *, quant: str = "Q4_1") -> str:
    store.ensure()
    layers = []
    for data in shards:
        digest = store.write_blob(data)
        layers.append({"mediaType": mt.DOCKER_GGUF, "digest": digest, "size": len(data)})
    config = json.dumps(
        {
            "config": {
                "format": "gguf",
                "quantization": quant,
                "parameters": "134.52 M",
                "architecture": "llama",
                "size": "93.8MiB",
            },
            "descriptor": {"created": "2025-01-01T00:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [layer["digest"] for layer in layers]},
        }
    ).encode()
    config_digest = store.write_blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
    ).encode()
    digest = store.write_blob(manifest)
    store.tag(name, Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(manifest)))
    return digest


@pytest.fixture
def store() -> Layout:
    return Layout(Path(os.environ["MODELCTL_HOME"]) / "store")


def test_list_inspect_path_tag_rm(
    store: Layout, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = add_model(store, "docker.io/ai/smollm2:135M-Q4_1", [b"GGUF one", b"GGUF two"])
    add_model(store, "docker.io/ai/other:latest", [b"GGUF one", b"GGUF other"], quant="Q8_0")

    code, out, _ = invoke(capsys, monkeypatch, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "PARAMETERS", "QUANTIZATION", "ARCHITECTURE", "MODEL", "ID", "CREATED", "SIZE"]
    assert lines[1].startswith("ai/smollm2:135M-Q4_1 ")
    assert digest[7:19] in lines[1]

    code, out, _ = invoke(capsys, monkeypatch, "ls", "--json")
    rows = json.loads(out)
    assert [r["reference"] for r in rows] == ["docker.io/ai/smollm2:135M-Q4_1", "docker.io/ai/other:latest"]
    assert rows[0]["quantization"] == "Q4_1" and rows[0]["id"] == digest[7:19]

    # two spellings of one name are one model
    code, out, _ = invoke(capsys, monkeypatch, "path", "docker.io/AI/smollm2:135M-Q4_1")
    assert code == 0
    first = Path(out.strip())
    assert first.name == "model-00001-of-00002.gguf"
    assert first.read_bytes() == b"GGUF one"
    assert (first.parent / "model-00002-of-00002.gguf").read_bytes() == b"GGUF two"

    code, out, _ = invoke(capsys, monkeypatch, "inspect", digest[7:19])
    doc = json.loads(out)
    assert doc["digest"] == digest and doc["architecture"] == "llama" and len(doc["files"]) == 2

    assert invoke(capsys, monkeypatch, "tag", "ai/smollm2:135M-Q4_1", "mine/small:v1")[0] == 0
    assert store.resolve("docker.io/mine/small:v1") is not None

    code, out, _ = invoke(capsys, monkeypatch, "rm", "ai/smollm2:135M-Q4_1")
    assert code == 0 and "removed docker.io/ai/smollm2:135M-Q4_1" in out
    # still tagged as mine/small:v1, so nothing was deleted
    assert store.has_blob(digest)
    invoke(capsys, monkeypatch, "rm", "mine/small:v1")
    assert not store.has_blob(digest)
    # the shard shared with ai/other survives
    assert store.has_blob(of_bytes(b"GGUF one"))
    assert not store.has_blob(of_bytes(b"GGUF two"))

    code, out, _ = invoke(capsys, monkeypatch, "df", "--json")
    assert json.loads(out)["models"] == 1


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("path", "ai/absent"), 3, "not in the local store: run: modelctl pull ai/absent"),
        (("rm", "ai/absent"), 3, "not in the local store"),
        (("inspect", "ai/x:-bad"), 2, "bad tag"),
        (("path", "Not A Name"), 2, "invalid reference"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    args: tuple[str, ...], code: int, fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    got, out, err = invoke(capsys, monkeypatch, *args)
    assert got == code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("modelctl: error: ")
    assert fragment in err
    assert "Traceback" not in err


def test_rm_force_ignores_absent(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke(capsys, monkeypatch, "rm", "--force", "ai/absent")[0] == 0


def test_list_empty_store(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = invoke(capsys, monkeypatch, "list", "--json")
    assert code == 0 and json.loads(out) == []
