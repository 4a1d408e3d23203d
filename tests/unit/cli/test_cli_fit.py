"""``modelctl fit`` from the command line: local GGUF files read in place, and the exit codes of bad ones."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from helpers.ggufs import tiny_llama, tiny_llama_split
from unit.cli.test_cli_local import invoke as run_cli  # tests/ is on sys.path


def invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # run reads piped input
    return run_cli(capsys, monkeypatch, *args)


def test_fit_of_a_local_file_reads_it_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    path = tiny_llama(tmp_path / "models" / "m.gguf")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(capsys, monkeypatch, "fit", "./models/m.gguf", "--json", "--ctx-size", "512")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reference"] == str(path)
    assert doc["settings"]["ctx_size"] == 512 and doc["bytes_fetched"] == 0
    assert doc["verdict"] in ("fits", "partial")
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    # not in the store: list shows nothing, and no store was created for it
    code, out, _ = invoke(capsys, monkeypatch, "list", "--quiet")
    assert code == 0 and out == ""


def test_fit_of_a_split_file_by_its_first_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = tiny_llama_split(tmp_path, 2)
    code, out, err = invoke(capsys, monkeypatch, "fit", f"file://{shards[0]}", "--json")
    assert code == 0, err
    one = tiny_llama(tmp_path / "whole.gguf")
    code, whole, err = invoke(capsys, monkeypatch, "fit", str(one), "--json")
    assert code == 0, err
    assert json.loads(out)["memory"]["kv_cache"] == json.loads(whole)["memory"]["kv_cache"]


@pytest.mark.parametrize(
    ("name", "content", "exit_code", "words"),
    [
        ("absent.gguf", None, 2, "no such file"),
        ("notes.gguf", b"just some text\n", 5, "is not a GGUF file"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes | None,
    exit_code: int,
    words: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for command in ("fit", "run"):  # serve: tests/e2e/test_local_file.py
        args = [command, str(path)] + {"fit": [], "run": ["Hi", "--no-pull"]}[command]
        code, out, err = invoke(capsys, monkeypatch, *args)
        assert code == exit_code, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("modelctl: error: ") and words in lines[0], (command, err)
        assert out == ""


def test_remote_is_for_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_llama(tmp_path / "m.gguf")
    code, _, err = invoke(capsys, monkeypatch, "fit", str(path), "--remote")
    assert code == 2 and "drop --remote" in err


def test_planned_gpus_and_llama_cpp_knobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tiny_llama(tmp_path / "m.gguf"))
    args = ["fit", path, "--json", "--gpu", "24GiB", "--gpu", "24576MiB", "--ram", "64GiB", "--ctx-size", "2048"]
    code, out, err = invoke(capsys, monkeypatch, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert [(d["name"], d["kind"], d["total"]) for d in doc["devices"]] == [
        ("CUDA0", "cuda", 24 << 30),
        ("CUDA1", "cuda", 24 << 30),
        ("RAM", "cpu", 64 << 30),
    ]
    for d in doc["devices"]:
        assert d["need"] == sum(d["buffers"].values())
    assert doc["verdict"] == "fits" and doc["gpu_layers"] == 3  # two blocks and the output layer
    knobs = [
        *args,
        "--gpu-backend",
        "vulkan",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "q4_0",
        "--flash-attn",
        "on",
        "--parallel",
        "2",
        "--batch-size",
        "256",
        "--ubatch-size",
        "128",
        "--split-mode",
        "layer",
        "--tensor-split",
        "1,0",
        "--n-cpu-moe",
        "0",
        "--gpu-layers",
        "2",
    ]
    code, out, err = invoke(capsys, monkeypatch, *knobs)
    assert code == 0, err
    doc = json.loads(out)
    s = doc["settings"]
    assert (s["cache_type_k"], s["cache_type_v"], s["flash_attn"], s["parallel"]) == ("q8_0", "q4_0", "on", 2)
    assert (s["n_batch"], s["n_ubatch"], s["tensor_split"], s["gpu_layers"]) == (256, 128, [1.0, 0.0], 2)
    assert [d["name"] for d in doc["devices"]][:2] == ["Vulkan0", "Vulkan1"]
    assert doc["devices"][1]["buffers"]["weights"] == 0  # --tensor-split 1,0: every offloaded layer on Vulkan0


def test_the_old_flags_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tiny_llama(tmp_path / "m.gguf"))
    code, out, err = invoke(capsys, monkeypatch, "fit", path, "--cache-type", "q8_0", "--gpu-layers", "0")
    assert code == 0, err
    assert "cache q8_0/q8_0" in out and "verdict:" in out


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--gpu", "24XB"], "not a size"),
        (["--ram", "lots"], "not a size"),
        (["--gpu", "8GiB", "--gpu", "8GiB", "--gpu-backend", "metal"], "one GPU"),
        (["--gpu", "8GiB", "--gpu-backend", "opencl"], "backend"),
        (["--flash-attn", "maybe"], "flash attention"),
        (["--cache-type-v", "q6_k"], "cache type"),
        (["--split-mode", "diagonal"], "split mode"),
        (["--tensor-split", "3,x"], "could not convert"),
    ],
)
def test_bad_knobs_are_usage_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    words: str,
) -> None:
    path = str(tiny_llama(tmp_path / "m.gguf"))
    code, out, err = invoke(capsys, monkeypatch, "fit", path, *extra)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and out == ""
