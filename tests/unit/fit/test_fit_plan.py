"""The plan: verdicts, GPU layer placement, the largest context and the suggestion, on a synthetic cost model."""

from __future__ import annotations

from collections.abc import Sequence

from modelctl.fit.devices import Device
from modelctl.fit.estimate import Buffers, Estimate
from modelctl.fit.plan import GPU_MARGIN, VariantInfo, plan

MIB = 1 << 20
GIB = 1 << 30
N_LAYER = 10
LAYER = 100 * MIB  # weights per layer (the output layer too)
KV_PER_TOKEN = 20 << 10  # per layer
COMPUTE = 50 * MIB


def model(*, cache: str = "f16") -> object:
    kv_scale = 0.5 if cache == "q8_0" else 1.0

    def estimate_at(ctx: int, ngl: int, split: Sequence[float], moe: int = 0) -> Estimate:
        start = N_LAYER + 1 - ngl
        gpu_blocks = max(0, min(ngl, N_LAYER + 1) - 1) if ngl else 0
        kv = int(ctx * KV_PER_TOKEN * kv_scale)
        cpu_layers = N_LAYER - gpu_blocks
        cpu = Buffers(
            weights=LAYER * (1 + cpu_layers + (0 if ngl else 1)),  # token_embd + CPU blocks (+ output)
            kv_cache=kv * cpu_layers,
            compute=COMPUTE,
            output=MIB,
        )
        if not ngl or not split:
            return Estimate(n_ctx=ctx, n_ctx_padded=ctx, n_layer=N_LAYER, gpu_layers=0, cpu=cpu)
        gpu = Buffers(weights=LAYER * (gpu_blocks + 1), kv_cache=kv * gpu_blocks, compute=COMPUTE)
        assert start >= 0
        return Estimate(n_ctx=ctx, n_ctx_padded=ctx, n_layer=N_LAYER, gpu_layers=ngl, cpu=cpu, gpus=(gpu,))

    return estimate_at


def ram(free: int) -> Device:
    return Device(name="CPU RAM", kind="cpu", total=64 * GIB, free=free)


def gpu(free: int) -> Device:
    return Device(name="GPU 0: Test", kind="cuda", total=24 * GIB, free=free, index=0)


def run(devices: list[Device], *, n_ctx: int = 4096, gpu_layers: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return plan(
        model(),  # type: ignore[arg-type]
        devices,
        n_layer=N_LAYER,
        n_ctx=n_ctx,
        trained_ctx=32768,
        gpu_layers=gpu_layers,
        estimate_with_cache=lambda cache, ctx, ngl, split, moe: model(cache=cache)(ctx, ngl, split),  # type: ignore[operator]
        **kw,  # type: ignore[arg-type]
    )


def test_cpu_only_fits() -> None:
    p = run([ram(8 * GIB)])
    assert p.verdict == "fits" and p.gpu_layers == 0 and p.suggestion is None
    assert p.needs == {"CPU RAM": p.estimate.cpu.total}
    assert p.max_ctx_size == 32768  # the trained context fits too


def test_cpu_only_too_large_a_context() -> None:
    p = run([ram(2 * GIB)], n_ctx=32768)
    assert p.verdict == "does_not_fit"
    assert p.max_ctx_size is not None and p.max_ctx_size % 256 == 0 and p.max_ctx_size < 32768
    assert p.suggestion and f"--ctx-size {p.max_ctx_size}" in p.suggestion
    assert run([ram(2 * GIB)], n_ctx=p.max_ctx_size).verdict == "fits"
    assert run([ram(2 * GIB)], n_ctx=p.max_ctx_size + 256).verdict == "does_not_fit"


def test_weights_alone_do_not_fit_suggests_a_variant() -> None:
    variants = [
        VariantInfo(reference="ai/x:big", weights=2 * GIB),
        VariantInfo(reference="ai/x:small", weights=300 * MIB),
        VariantInfo(reference="ai/x:tiny", weights=100 * MIB),
    ]
    p = run([ram(1228 * MIB)], variants=variants)  # the weights and compute alone need 1251 MiB
    assert p.verdict == "does_not_fit" and p.max_ctx_size is None
    assert p.suggestion and "try ai/x:small" in p.suggestion
    assert "smaller variant" in (run([ram(1 * GIB)]).suggestion or "")


def test_variants_are_looked_up_only_for_a_suggestion() -> None:
    calls: list[int] = []

    def find() -> list[VariantInfo]:
        calls.append(1)
        return [VariantInfo(reference="ai/x:small", weights=300 * MIB)]

    assert run([ram(64 * GIB)], variants=find).verdict == "fits" and calls == []
    p = run([ram(1228 * MIB)], variants=find)
    assert p.suggestion and "try ai/x:small" in p.suggestion and calls == [1]


def test_all_layers_on_a_large_gpu() -> None:
    p = run([gpu(8 * GIB), ram(4 * GIB)])
    assert p.verdict == "fits" and p.gpu_layers == N_LAYER + 1 and p.n_layers == N_LAYER + 1
    assert p.needs["GPU 0: Test"] == p.estimate.gpus[0].total <= 8 * GIB - GPU_MARGIN


def test_partial_offload_names_the_split_and_how_to_avoid_it() -> None:
    p = run([gpu(1 * GIB), ram(8 * GIB)], n_ctx=4096)
    assert p.verdict == "partial" and 0 < p.gpu_layers < N_LAYER + 1
    assert p.estimate.gpus[0].total <= 1 * GIB - GPU_MARGIN
    over = model()(4096, p.gpu_layers + 1, [1.0])  # type: ignore[operator]
    assert over.gpus[0].total > 1 * GIB - GPU_MARGIN  # one more layer would not fit
    assert p.suggestion and p.suggestion.startswith(f"{p.gpu_layers} of {N_LAYER + 1} layers fit on the GPU")


def test_margin_is_kept_free_on_the_gpu() -> None:
    need = model()(4096, N_LAYER + 1, [1.0]).gpus[0].total  # type: ignore[operator]
    assert run([gpu(need + GPU_MARGIN), ram(8 * GIB)]).verdict == "fits"
    assert run([gpu(need + GPU_MARGIN - 1), ram(8 * GIB)]).verdict == "partial"
    assert run([gpu(need), ram(8 * GIB)], margin=0).verdict == "fits"


def test_explicit_gpu_layers_are_judged_not_chosen() -> None:
    p = run([gpu(1 * GIB), ram(8 * GIB)], gpu_layers=N_LAYER + 1)
    assert p.verdict == "does_not_fit" and p.gpu_layers == N_LAYER + 1
    assert p.suggestion and "--gpu-layers" in p.suggestion
    assert run([gpu(1 * GIB), ram(8 * GIB)], gpu_layers=0).verdict == "fits"
    assert run([gpu(8 * GIB), ram(8 * GIB)], gpu_layers=-1).gpu_layers == N_LAYER + 1


def test_q8_cache_suggested_when_it_is_what_makes_it_fit() -> None:
    # weights 1.2 GB, KV 20 KiB x 10 layers per token: at 8192 tokens f16 needs 1.6 GB of KV, q8_0 half
    need_q8 = model(cache="q8_0")(8192, 0, ())  # type: ignore[operator]
    p = run([ram(need_q8.cpu.total + MIB)], n_ctx=8192)
    assert p.verdict == "does_not_fit"
    assert p.suggestion and "--cache-type q8_0" in p.suggestion


def test_no_cpu_device_listed_still_plans_the_gpu() -> None:
    p = run([gpu(8 * GIB)])
    assert p.verdict == "fits" and "CPU RAM" not in p.needs


def test_apple_unified_memory_counts_gpu_buffers_against_ram() -> None:
    metal = Device(name="Apple GPU (Metal)", kind="metal", total=8 * GIB, free=8 * GIB, index=0)
    need = model()(4096, N_LAYER + 1, [1.0])  # type: ignore[operator]
    assert run([metal, ram(need.total + MIB)]).verdict == "fits"
    assert run([metal, ram(need.cpu.total + MIB)]).verdict == "does_not_fit"
