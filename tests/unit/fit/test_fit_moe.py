"""A MoE model that does not fit the GPU keeps the experts of its first layers in RAM, one layer more at a time,
before it leaves whole layers there (llama.cpp's ``--fit``); planned over header-only MoE GGUFs."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from unit.fit.test_fit_gpu import moe_header  # tests/ is on sys.path

from modelctl.cpu import WeightBuffers
from modelctl.fit.devices import Device, planned
from modelctl.fit.estimate import OFFLOAD_MIN_BATCH, Estimate, estimate
from modelctl.fit.plan import GPU_MARGIN
from modelctl.fit.report import expert_layers, fit_headers
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import shape_of
from modelctl.gguf import GGUFHeader

MIB, GIB = 1 << 20, 1 << 30
NONE = WeightBuffers(setting="none")
RAM = Device(name="RAM", kind="cpu", total=64 * GIB, free=64 * GIB)
N_LAYER = 12
SETTINGS = RunSettings(n_ctx=4096)


def header() -> GGUFHeader:
    return moe_header(n_layer=N_LAYER, n_embd=1024, n_expert=32, n_ff_exp=512)


def gpu_need(h: GGUFHeader, moe: int, *, ngl: int = -1, settings: RunSettings = SETTINGS, n_gpus: int = 1) -> int:
    est = estimate(h, replace(settings, n_cpu_moe=moe), gpu_layers=ngl, gpu_split=[1.0] * n_gpus, buffers=NONE)
    return max(g.total for g in est.gpus)


def plan_on(h: GGUFHeader, gpu: int, settings: RunSettings = SETTINGS, n_gpus: int = 1):  # type: ignore[no-untyped-def]
    return fit_headers([h], settings, devices=planned([gpu] * n_gpus, "cuda", RAM), buffers=NONE)


def test_the_gpu_needs_less_with_each_layer_whose_experts_stay_in_ram() -> None:
    h = header()
    needs = [gpu_need(h, moe) for moe in range(N_LAYER + 1)]
    assert all(a > b for a, b in itertools.pairwise(needs))
    assert expert_layers(h, shape_of(h)) == N_LAYER


def test_a_model_that_fits_whole_keeps_every_expert_on_the_gpu() -> None:
    h = header()
    report = plan_on(h, gpu_need(h, 0) + GPU_MARGIN)
    assert report.verdict == "fits" and report.gpu_layers == N_LAYER + 1 and report.n_cpu_moe == 0


@pytest.mark.parametrize("wanted", [1, 5, N_LAYER])
def test_experts_go_to_ram_layer_by_layer_before_any_whole_layer(wanted: int) -> None:
    h = header()
    report = plan_on(h, gpu_need(h, wanted) + GPU_MARGIN)
    assert report.verdict == "partial" and report.gpu_layers == N_LAYER + 1
    assert report.n_cpu_moe == wanted  # the fewest: one layer less does not fit
    assert gpu_need(h, wanted - 1) > gpu_need(h, wanted)
    assert report.to_json()["settings"]["n_cpu_moe"] == wanted
    assert report.suggestion and f"experts of the first {wanted} kept in RAM" in report.suggestion
    # the host maps the experts the GPU does not hold
    assert report.estimate.cpu.weights > plan_on(h, 64 * GIB).estimate.cpu.weights


def test_whole_layers_are_dropped_only_when_the_dense_weights_do_not_fit() -> None:
    h = header()
    report = plan_on(h, gpu_need(h, N_LAYER) + GPU_MARGIN - 1)  # every expert in RAM is still too much
    assert report.verdict == "partial" and report.n_cpu_moe == 0
    assert 0 < report.gpu_layers < N_LAYER + 1
    assert gpu_need(h, 0, ngl=report.gpu_layers) + GPU_MARGIN <= gpu_need(h, N_LAYER) + GPU_MARGIN - 1
    assert report.suggestion and report.suggestion.startswith(f"{report.gpu_layers} of {N_LAYER + 1} layers")


def test_a_requested_n_cpu_moe_or_layer_count_is_judged_not_changed() -> None:
    h = header()
    small = gpu_need(h, 6) + GPU_MARGIN
    fixed = plan_on(h, small, RunSettings(n_ctx=4096, n_cpu_moe=2))
    assert fixed.n_cpu_moe == 2 and fixed.gpu_layers < N_LAYER + 1  # layers dropped around the user's choice
    given = plan_on(h, small, RunSettings(n_ctx=4096, gpu_layers=-1))
    assert given.verdict == "does_not_fit" and given.n_cpu_moe == 0
    assert given.suggestion and "--gpu-layers auto" in given.suggestion and "experts of the first 6" in given.suggestion


def test_a_dense_model_never_moves_experts() -> None:
    h = header()
    dense = replace(h, metadata={k: v for k, v in h.metadata.items() if "expert" not in k})
    assert expert_layers(dense, shape_of(dense)) == 0
    report = plan_on(dense, gpu_need(h, 6) + GPU_MARGIN)
    assert report.n_cpu_moe == 0


def test_two_gpus_relieve_the_first_layers_first() -> None:
    h = header()
    report = plan_on(h, gpu_need(h, 8, n_gpus=2) + GPU_MARGIN, n_gpus=2)
    assert report.gpu_layers == N_LAYER + 1 and 0 < report.n_cpu_moe <= 8
    both = report.estimate.gpus
    assert all(g.total <= gpu_need(h, 8, n_gpus=2) for g in both)


def test_experts_in_ram_are_copied_into_the_first_gpus_compute_buffer_for_a_large_batch() -> None:
    """CUDA, ROCm and Vulkan run a large batch's expert products on the GPU: one expert tensor at a time is
    copied in; a small batch (below the offload threshold) or Metal leaves them to the CPU."""
    h = header()
    largest = max(t.n_bytes for t in h.tensors if "_exps" in t.name)
    short = RunSettings(n_ctx=512)  # small attention scores: the copy decides the buffer
    full, kept = on(h, short), on(h, replace(short, n_cpu_moe=3))
    assert kept.gpus[0].compute >= largest > 0 and kept.gpus[0].compute > full.gpus[0].compute
    assert kept.cpu.compute == full.cpu.compute  # the host only hands over the inputs
    small = RunSettings(n_ctx=4096, n_ubatch=OFFLOAD_MIN_BATCH - 1)
    assert on(h, replace(small, n_cpu_moe=3)).gpus[0].compute == on(h, small).gpus[0].compute
    metal = [on(h, replace(SETTINGS, n_cpu_moe=moe), backend="metal").gpus[0].compute for moe in (0, 3)]
    assert metal[0] == metal[1]


def on(h: GGUFHeader, settings: RunSettings, backend: str = "cuda") -> Estimate:
    return estimate(h, settings, gpu_layers=-1, gpu_split=[1.0], buffers=NONE, backend=backend)
