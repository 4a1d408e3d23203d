"""The estimate against the buffer sizes llama.cpp itself prints when it loads the real model (the ground truth).

Targets (issue 5): weights, KV cache and output within 0.1 MiB; compute within +15% / -0%; total never under.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelctl.fit.devices import Device
from modelctl.fit.settings import RunSettings
from modelctl.services.fit import fit_local

MIB = 1 << 20
LOADER = """
import sys
from llama_cpp import Llama
Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=512, n_ubatch=512, n_gpu_layers=0, n_threads=2,
      type_k=int(sys.argv[3]), type_v=int(sys.argv[3]), flash_attn=sys.argv[3] != "1", verbose=True)
"""
GGML_TYPE = {"f16": 1, "q8_0": 8}


def llama_cpp_buffers(model: Path, ctx: int, cache: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(model), str(ctx), str(GGML_TYPE[cache])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found: dict[str, float] = {}
    for key, pattern in {
        "weights": r"model buffer size\s*=\s*([\d.]+) MiB",
        "kv_cache": r"KV buffer size\s*=\s*([\d.]+) MiB",
        "output": r"output buffer size\s*=\s*([\d.]+) MiB",
        "compute": r"compute buffer size\s*=\s*([\d.]+) MiB",
    }.items():
        values = [float(v) for v in re.findall(pattern, out.stderr)]
        assert values, f"llama.cpp did not print {key}"
        found[key] = sum(values) if key != "compute" else values[0]
    return found


@pytest.mark.parametrize(("ctx", "cache"), [(512, "f16"), (2048, "f16"), (4096, "q8_0")])
def test_estimate_matches_llama_cpp(smollm2_gguf: Path, ctx: int, cache: str) -> None:
    truth = llama_cpp_buffers(smollm2_gguf, ctx, cache)
    ram = [Device(name="CPU RAM", kind="cpu", total=64 << 30, free=64 << 30)]
    report = fit_local([smollm2_gguf], RunSettings(n_ctx=ctx, cache_type=cache), devices=ram)
    est = report.estimate
    assert abs(est.weights / MIB - truth["weights"]) <= 0.1
    assert abs(est.kv_cache / MIB - truth["kv_cache"]) <= 0.1
    assert abs(est.output / MIB - truth["output"]) <= 0.1
    assert truth["compute"] <= est.compute / MIB <= truth["compute"] * 1.15
    assert est.total / MIB >= sum(truth.values())
