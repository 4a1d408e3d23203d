"""The fit check against the buffer sizes llama.cpp itself prints when it loads a model (the ground truth).

A subset of benchmarks/fit_accuracy.py: SmolLM2 at two contexts and generated shapes (GQA llama, OpenELM's
per-layer head counts, a feed-forward 32x the embedding width), with the f16 cache and a quantised one, and the
extra CPU weight buffers each ``MODELCTL_CPU_BUFFERS`` setting loads (``all``: AMX, only on CPUs that have it).
Targets (issue 5): weights, KV cache and output within 0.1 MiB; compute within +15% / -0%; the total never under.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from modelctl import cpu
from modelctl.fit.devices import Device
from modelctl.fit.settings import RunSettings
from modelctl.services.fit import fit_local

ROOT = Path(__file__).resolve().parents[2]


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_accuracy", ROOT / "benchmarks" / "fit_accuracy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fit_accuracy", module)
    spec.loader.exec_module(module)
    return module


fa = _benchmark()


@pytest.fixture(autouse=True)
def _needs_llama_cpp() -> None:
    pytest.importorskip("llama_cpp")


@pytest.mark.parametrize(("ctx", "cache"), [(512, "f16"), (4096, "f16"), (4096, "q8_0")])
def test_smollm2(smollm2_gguf: Path, ctx: int, cache: str) -> None:
    (row,) = fa.compare(smollm2_gguf, "SmolLM2", [(ctx, cache)])
    assert not row.problems, row.problems
    # the service reports the same estimate the benchmark checks
    ram = [Device(name="CPU RAM", kind="cpu", total=64 << 30, free=64 << 30)]
    report = fit_local([smollm2_gguf], RunSettings(n_ctx=ctx, cache_type=cache), devices=ram)
    assert abs(report.estimate.compute / fa.MIB - row.predicted["compute"]) < 1e-9
    assert report.verdict == "fits" and report.gpu_layers == 0


def _needs(setting: str) -> None:
    if not fa.cpu_applies(setting):
        pytest.skip(f"MODELCTL_CPU_BUFFERS={setting} needs a CPU with AMX; this one has none")


@pytest.mark.parametrize(
    ("shape", "cases"),
    [
        ("llama-gqa-f16", [(2048, "f16"), (8192, "q4_0")]),
        ("openelm-per-layer-heads", [(4096, "f16"), (2048, "q8_0")]),
        ("llama-ffn32-q8_0", [(4096, "f16"), (2048, "q8_0")]),
        ("llama-q4_0", [(1024, "f16", "none")]),
        ("llama-q4_0", [(1024, "f16", "all")]),
        ("llama-q4_k", [(1024, "f16", "all"), (4096, "q8_0", "all")]),
        ("llama-gqa-f16", [(1024, "f16", "all")]),
        ("deepseek-v3-mla", [(4096, "q8_0")]),  # MLA: its absorbed query once went uncounted (-55%)
    ],
)
def test_generated_shapes(tmp_path: Path, shape: str, cases: list[fa.Case]) -> None:
    for case in cases:
        _needs(case[2] if len(case) > 2 else "auto")
    (spec,) = [s for s in fa.SHAPES if s.name == shape]
    path = fa.write_gguf(spec, tmp_path / f"{shape}.gguf")
    rows = fa.compare(path, shape, cases)
    assert len(rows) == len(cases)
    assert all(not r.problems for r in rows), [(r.n_ctx, r.cache, r.buffers, r.problems) for r in rows]


@pytest.mark.parametrize("setting", ["all", "none"])
def test_smollm2_cpu_buffers(smollm2_gguf: Path, setting: str) -> None:
    _needs(setting)
    (row,) = fa.compare(smollm2_gguf, "SmolLM2", [(512, "f16", setting)])
    assert not row.problems, row.problems
    amx = setting == "all"
    assert (row.truth["weights"] > 150) is amx  # the AMX copy of every matrix besides the mmapped file


def test_this_cpu_is_described() -> None:
    name, features = fa.machine()
    assert name and features.startswith("CPU :")
    assert "AMX_INT8 = 1" in features or not cpu.from_llama_line(features).has_amx
