"""The fit report on real GGUF files: local and remote (ranged reads) give the same report; the JSON contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import numpy as np
import pytest

from modelctl.errors import GGUFError
from modelctl.fit.devices import Device
from modelctl.fit.report import fit_local, fit_remote
from modelctl.fit.settings import RunSettings

GIB = 1 << 30
RAM = [Device(name="CPU RAM", kind="cpu", total=16 * GIB, free=8 * GIB)]


def write_model(path: Path, *, n_layer: int = 2, n_vocab: int = 3000, split: tuple[int, int] | None = None) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_file_type(1)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
    layers = range(n_layer)
    if split:
        w.add_uint16("split.no", split[0])
        w.add_uint16("split.count", split[1])
        layers = range(split[0], n_layer, split[1])
    if not split or split[0] == 0:
        w.add_tensor("token_embd.weight", np.zeros((n_vocab, 64), dtype=np.float16))
        w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    for i in layers:
        for name, rows in (("attn_q", 64), ("attn_k", 32), ("attn_v", 32), ("attn_output", 64)):
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros((rows, 64), dtype=np.float16))
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((128, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_json_has_exactly_the_documented_fields(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    report = fit_local([path], RunSettings(), devices=RAM, reference="docker.io/ai/m:latest")
    doc = report.to_json()
    assert set(doc) == {
        "reference",
        "settings",
        "memory",
        "devices",
        "verdict",
        "gpu_layers",
        "max_ctx_size",
        "suggestion",
        "bytes_fetched",
        "notice",
    }
    assert doc["reference"] == "docker.io/ai/m:latest"
    assert doc["settings"] == {
        "ctx_size": 2048,
        "cache_type": "f16",
        "cache_type_k": "f16",
        "cache_type_v": "f16",
        "flash_attn": "off",
        "n_batch": 512,
        "n_ubatch": 512,
        "parallel": 1,
        "gpu_layers": 0,
        "n_cpu_moe": 0,
        "split_mode": "layer",
        "tensor_split": [],
    }
    memory = doc["memory"]
    assert set(memory) == {"weights", "kv_cache", "compute", "output", "total"}
    assert memory["total"] == memory["weights"] + memory["kv_cache"] + memory["compute"] + memory["output"]
    assert memory["kv_cache"] == 2 * 2 * 16 * 2 * 2 * 2048  # layers x kv heads x head dim x (K+V) x f16 x cells
    (ram,) = doc["devices"]
    assert {k: ram[k] for k in ("name", "kind", "total", "free", "need")} == {
        "name": "CPU RAM",
        "kind": "cpu",
        "total": 16 * GIB,
        "free": 8 * GIB,
        "need": memory["total"],
    }
    buffers = ram["buffers"]
    assert set(buffers) == {"weights", "kv_cache", "compute", "output", "overhead"}
    assert sum(buffers.values()) == ram["need"]
    assert buffers["kv_cache"] == memory["kv_cache"] and buffers["weights"] == memory["weights"]
    assert (doc["verdict"], doc["max_ctx_size"], doc["suggestion"], doc["bytes_fetched"]) == ("fits", 2048, None, 0)
    assert report.architecture == "llama" and report.quantization == "F16" and report.parameters > 0
    assert dataclasses.replace(report, reference="x").reference == "x"


def test_remote_reads_only_the_header_and_agrees_with_local(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", n_vocab=60_000)
    data = path.read_bytes()
    asked: list[tuple[str, int, int]] = []

    def open_range(digest: str, start: int, end: int) -> bytes:
        asked.append((digest, start, end))
        return data[start : end + 1]

    remote = fit_remote(open_range, [("sha256:abc", len(data))], RunSettings(n_ctx=1024), devices=RAM)
    local = fit_local([path], RunSettings(n_ctx=1024), devices=RAM)
    assert remote.to_json()["memory"] == local.to_json()["memory"]
    assert {d for d, _, _ in asked} == {"sha256:abc"}
    assert 0 < remote.bytes_fetched < len(data) // 2
    assert remote.to_json()["bytes_fetched"] == remote.bytes_fetched


def test_split_model_counts_every_shard(tmp_path: Path) -> None:
    shards = [write_model(tmp_path / f"m-0000{i + 1}-of-00002.gguf", n_layer=4, split=(i, 2)) for i in range(2)]
    whole = write_model(tmp_path / "whole.gguf", n_layer=4)
    split = fit_local(shards, RunSettings(), devices=RAM)
    single = fit_local([whole], RunSettings(), devices=RAM)
    assert split.estimate.kv_cache == single.estimate.kv_cache
    assert abs(split.estimate.weights - single.estimate.weights) < 4096  # alignment padding differs per file
    with pytest.raises(GGUFError, match=r"split\.count"):
        fit_local(shards[:1], RunSettings(), devices=RAM)


def test_too_little_memory_gives_a_verdict_and_a_suggestion(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    small = [Device(name="CPU RAM", kind="cpu", total=GIB, free=40 << 20)]
    report = fit_local([path], RunSettings(n_ctx=1 << 20), devices=small)
    assert report.verdict == "does_not_fit"
    assert report.max_ctx_size is not None and report.suggestion
    assert f"--ctx-size {report.max_ctx_size}" in report.suggestion
    assert fit_local([path], RunSettings(n_ctx=report.max_ctx_size), devices=small).verdict == "fits"


def test_partial_offload_on_a_small_gpu(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", n_layer=8, n_vocab=30_000)
    devices = [Device(name="GPU 0: T", kind="cuda", total=GIB, free=(512 << 20) + (40 << 20)), *RAM]
    report = fit_local([path], RunSettings(n_ctx=2048), devices=devices)
    assert report.verdict in ("partial", "fits")
    doc = report.to_json()
    assert doc["settings"]["gpu_layers"] == report.gpu_layers == doc["gpu_layers"]
    gpu = doc["devices"][0]
    assert gpu["need"] <= gpu["free"] and gpu["buffers"]["overhead"] == 512 << 20
    all_cpu = fit_local([path], RunSettings(n_ctx=2048, gpu_layers=0), devices=devices)
    assert all_cpu.gpu_layers == 0 and all_cpu.verdict == "fits"


def test_detects_this_machine_by_default(tmp_path: Path) -> None:
    report = fit_local([write_model(tmp_path / "m.gguf")], RunSettings())
    assert report.devices[-1].kind == "cpu"
