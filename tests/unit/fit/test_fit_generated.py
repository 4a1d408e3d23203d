"""The estimator on generated GGUFs, and the device probes with injected files and a fake nvidia-smi."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from modelctl.fit import devices
from modelctl.fit.devices import Device
from modelctl.fit.settings import RunSettings
from modelctl.services.fit import fit_local

GIB = 1 << 30


def write_model(path: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_embedding_length(n_embd)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_context_length(2048)
    w.add_feed_forward_length(n_embd * 2)
    w.add_token_list([f"t{i}" for i in range(100)])
    w.add_tensor("token_embd.weight", np.zeros((100, n_embd), dtype=np.float32))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((n_embd, n_embd), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_estimate_matches_the_formulas(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf")
    big = [Device(name="CPU RAM", kind="cpu", total=16 * GIB, free=8 * GIB)]
    report = fit_local([path], RunSettings(n_ctx=1000), devices=big)
    doc = report.to_json()
    assert doc["settings"]["ctx_size"] == 1000
    # weights: 100x64 f32 + 2 x 64x64 f16
    assert doc["memory"]["weights"] == 100 * 64 * 4 + 2 * 64 * 64 * 2
    # KV: 2 layers x 2 kv heads x (16 + 16) x 2 bytes x 1024 cells (1000 padded to 256)
    assert doc["memory"]["kv_cache"] == 2 * 2 * 32 * 2 * 1024
    assert doc["verdict"] == "fits" and doc["gpu_layers"] == 0
    q8 = fit_local([path], RunSettings(n_ctx=1000, cache_type="q8_0"), devices=big).to_json()
    assert q8["memory"]["kv_cache"] == int(2 * 2 * 32 * 34 / 32 * 1024)


def test_default_context_is_capped_and_too_big_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", n_layer=8, n_embd=256, n_head=8, n_head_kv=8)
    small = [Device(name="CPU RAM", kind="cpu", total=GIB, free=40 << 20)]
    default = fit_local([path], RunSettings(), devices=small).to_json()
    assert default["settings"]["ctx_size"] == 2048  # min(trained 2048, 4096)
    huge = fit_local([path], RunSettings(n_ctx=1 << 20), devices=small)
    assert huge.verdict == "does_not_fit"
    assert huge.max_ctx_size is not None and huge.max_ctx_size < 1 << 20
    assert huge.suggestion and f"--ctx-size {huge.max_ctx_size}" in huge.suggestion
    at_max = fit_local([path], RunSettings(n_ctx=huge.max_ctx_size), devices=small)
    assert at_max.verdict == "fits"


def test_cpu_probe_caps_by_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   8000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert devices.cpu(meminfo, cgroup).free == 8000000 * 1024
    (cgroup / "memory.max").write_text(str(4 * GIB))
    (cgroup / "memory.current").write_text(str(1 * GIB))
    dev = devices.cpu(meminfo, cgroup)
    assert dev.free == 3 * GIB and dev.total == 4 * GIB
    (cgroup / "memory.max").write_text("max")
    assert devices.cpu(meminfo, cgroup).free == 8000000 * 1024


def test_nvidia_smi_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 81559, 80000'\necho '1, NVIDIA H100 80GB HBM3, 81559, 100'\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = devices.nvidia()
    assert [g.kind for g in gpus] == ["cuda", "cuda"]
    assert gpus[0].total == 81559 << 20 and gpus[1].free == 100 << 20
    broken = tmp_path / "bin2"
    broken.mkdir()
    (broken / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (broken / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(broken))
    assert devices.nvidia() == []
