"""The verdict: where the layers go, whether the model fits, the largest context that does, and what to try.

Memory is monotone in the knobs: more GPU layers need more GPU memory and less host memory, and so do fewer MoE
layers with their experts kept on the host; a larger context needs more of both. So each choice is a binary search.

A MoE model that does not fit whole keeps the experts of its first layers in host memory before it leaves whole
layers there, as llama.cpp's own ``--fit`` does: every layer's attention and dense weights stay on the GPU, where
they matter most per byte, and only the experts (most of the weights, each token reads few of them) are read from
RAM. Only when even the dense weights of every layer do not fit are whole layers dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelctl.fit.builds import KV_PAD
from modelctl.fit.devices import Device
from modelctl.fit.estimate import Estimate

GPU_MARGIN = 512 << 20
"""Kept free on every GPU for what no llama.cpp buffer reports: the CUDA (or ROCm) context and the cuBLAS
workspace, 0.3-0.5 GiB per GPU in practice, plus allocator slack. Ollama keeps 457 MiB (512 MiB on Metal);
llama.cpp's own fitter keeps 1 GiB, which refuses loads that work. 512 MiB covers the measured range."""
HOST_MARGIN = 0
"""Kept free in RAM by default: MemAvailable already leaves out what is in use, and the estimate counts
llama-cpp-python's own arrays."""
MIN_CTX = KV_PAD

Verdict = str  # "fits" | "partial" | "does_not_fit"


@dataclass(frozen=True, kw_only=True, slots=True)
class VariantInfo:
    """Another variant of the same model (from its card), for the suggestion when this one does not fit."""

    reference: str
    """What to run instead, e.g. ``ai/llama3.1:8B-Q4_K_M``."""
    weights: int
    """Bytes of its weights (its GGUF size)."""
    quantization: str | None = None


Variants = Sequence[VariantInfo] | Callable[[], Sequence[VariantInfo]]
"""The other variants, or a function that finds them: called only when a suggestion needs them (reading a card
costs more than the whole fit check)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    verdict: Verdict
    gpu_layers: int
    """Layers on the GPUs, the output layer counting as one."""
    n_layers: int
    """Layers that can be offloaded: the model's blocks plus the output layer."""
    estimate: Estimate
    """The estimate for the chosen placement."""
    n_cpu_moe: int = 0
    """MoE layers (the first N) whose experts stay in host memory (llama.cpp's ``--n-cpu-moe``)."""
    needs: dict[str, int] = field(default_factory=dict)
    """Bytes each device (by name) needs."""
    max_ctx_size: int | None = None
    suggestion: str | None = None


EstimateAt = Callable[[int, int, Sequence[float], int], Estimate]
"""(n_ctx, gpu_layers, gpu_split, n_cpu_moe) -> Estimate."""


def _needs(est: Estimate, cpu: Device | None, gpus: Sequence[Device]) -> dict[str, int]:
    needs: dict[str, int] = {}
    if cpu is not None:
        needs[cpu.name] = est.cpu.total
    for dev, buffers in zip(gpus, est.gpus, strict=False):
        needs[dev.name] = buffers.total
    return needs


def _fits(est: Estimate, cpu: Device | None, gpus: Sequence[Device], margin: int, host_margin: int) -> bool:
    if cpu is not None:
        # Apple's GPU shares the RAM: what it holds comes out of the same free memory
        unified = any(d.kind == "metal" for d in gpus)
        host_need = est.total if unified else est.cpu.total
        if host_need > cpu.free - host_margin:
            return False
    return all(b.total <= d.free - margin for d, b in zip(gpus, est.gpus, strict=False))


def _gpu_fits(est: Estimate, gpus: Sequence[Device], margin: int) -> bool:
    return all(b.total <= d.free - margin for d, b in zip(gpus, est.gpus, strict=False))


def plan(
    estimate_at: EstimateAt,
    devices: Sequence[Device],
    *,
    n_layer: int,
    n_ctx: int,
    trained_ctx: int | None,
    gpu_layers: int | None = None,
    n_cpu_moe: int = 0,
    expert_layers: int = 0,
    cache_type: str = "f16",
    estimate_with_cache: Callable[[str, int, int, Sequence[float], int], Estimate] | None = None,
    margin: int = GPU_MARGIN,
    host_margin: int = HOST_MARGIN,
    variants: Variants = (),
) -> Plan:
    """Place the layers, judge the fit at ``n_ctx`` and find the largest context that fits.

    ``gpu_layers`` None means auto: as many layers on the GPUs as fit (all of them when they do); for a MoE model
    (``expert_layers``: how many of its first layers hold experts) the experts of the first layers move to the
    host first, one layer more at a time, before whole layers do. A number of layers (or -1 for all) is taken as
    given and only judged, and so is ``n_cpu_moe`` when not 0. ``estimate_with_cache`` lets the suggestion try a
    q8_0 cache.
    """
    cpu = next((d for d in devices if not d.is_gpu), None)
    gpus = [d for d in devices if d.is_gpu]
    split = [float(max(d.free - margin, 0)) for d in gpus]
    total_layers = n_layer + 1

    searched = 0 if n_cpu_moe else expert_layers

    def place(ctx: int) -> tuple[int, int, Estimate]:
        """The GPU layers and host-expert layers that fit the GPUs at ``ctx`` (auto), or the requested ones."""
        if not gpus:
            return 0, n_cpu_moe, estimate_at(ctx, 0, (), n_cpu_moe)
        if gpu_layers is None:
            ngl, moe = place_auto(estimate_at, ctx, gpus, split, total_layers, margin, n_cpu_moe, searched)
        else:
            ngl, moe = (total_layers if gpu_layers < 0 else min(gpu_layers, total_layers)), n_cpu_moe
        return ngl, moe, estimate_at(ctx, ngl, split, moe)

    ngl, moe, est = place(n_ctx)
    fits = _fits(est, cpu, gpus, margin, host_margin)
    if not fits:
        verdict: Verdict = "does_not_fit"
    elif gpus and gpu_layers is None and (ngl < total_layers or moe > n_cpu_moe):
        verdict = "partial"
    else:
        verdict = "fits"

    limit = max(trained_ctx or n_ctx, n_ctx)

    def fits_at(ctx: int, *, all_on_gpu: bool) -> bool:
        layers, experts, e = place(ctx)
        if all_on_gpu and (layers < total_layers or experts > n_cpu_moe):
            return False
        return _fits(e, cpu, gpus, margin, host_margin)

    full_gpu = bool(gpus) and gpu_layers is None
    best_ctx = _largest(lambda c: fits_at(c, all_on_gpu=True), limit) if full_gpu else None
    if best_ctx is None:
        best_ctx = _largest(lambda c: fits_at(c, all_on_gpu=False), limit)

    suggestion = _suggest(
        verdict=verdict,
        est=est,
        ngl=ngl,
        total_layers=total_layers,
        n_ctx=n_ctx,
        best_ctx=best_ctx,
        cache_type=cache_type,
        q8_fits=_q8_fits(estimate_with_cache, cache_type, n_ctx, (ngl, moe), split, cpu, gpus, margin, host_margin),
        requested=gpu_layers,
        auto=_auto_that_fits(estimate_at, n_ctx, cpu, gpus, split, total_layers, margin, host_margin, searched)
        if gpu_layers is not None and not fits
        else None,
        moe=moe - n_cpu_moe,
        cpu=cpu,
        gpus=gpus,
        margin=margin,
        variants=variants,
    )
    return Plan(
        verdict=verdict,
        gpu_layers=ngl,
        n_layers=total_layers,
        estimate=est,
        n_cpu_moe=moe,
        needs=_needs(est, cpu, gpus),
        max_ctx_size=best_ctx,
        suggestion=suggestion,
    )


def place_auto(
    estimate_at: EstimateAt,
    ctx: int,
    gpus: Sequence[Device],
    split: Sequence[float],
    total: int,
    margin: int,
    n_cpu_moe: int = 0,
    expert_layers: int = 0,
) -> tuple[int, int]:
    """(GPU layers, layers whose experts stay on the host) at ``ctx``: every layer with the fewest host-expert
    layers that fit (searched up to ``expert_layers``), else the most whole layers that fit."""
    if not gpus:
        return 0, n_cpu_moe

    def gpu_fits(ngl: int, moe: int) -> bool:
        return _gpu_fits(estimate_at(ctx, ngl, split, moe), gpus, margin)

    if expert_layers and not gpu_fits(total, n_cpu_moe) and gpu_fits(total, expert_layers):
        lo, hi = n_cpu_moe + 1, expert_layers  # the fewest that fit: hi always fits
        while lo < hi:
            mid = (lo + hi) // 2
            if gpu_fits(total, mid):
                hi = mid
            else:
                lo = mid + 1
        return total, lo
    lo, hi = 0, total
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if gpu_fits(mid, n_cpu_moe):
            lo = mid
        else:
            hi = mid - 1
    return lo, n_cpu_moe


def _auto_that_fits(
    estimate_at: EstimateAt,
    ctx: int,
    cpu: Device | None,
    gpus: Sequence[Device],
    split: Sequence[float],
    total: int,
    margin: int,
    host_margin: int,
    expert_layers: int = 0,
) -> tuple[int, int] | None:
    """The automatic placement (GPU layers, host-expert layers), when it fits where the requested one does not."""
    if not gpus:
        return None
    ngl, moe = place_auto(estimate_at, ctx, gpus, split, total, margin, 0, expert_layers)
    return (ngl, moe) if _fits(estimate_at(ctx, ngl, split, moe), cpu, gpus, margin, host_margin) else None


def _largest(fits: Callable[[int], bool], limit: int) -> int | None:
    """The largest multiple of 256 up to ``limit`` for which ``fits`` holds (it is monotone), or None."""
    hi = max(limit // KV_PAD, 1)
    if not fits(MIN_CTX):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * KV_PAD):
            lo = mid
        else:
            hi = mid - 1
    return lo * KV_PAD


def _q8_fits(
    estimate_with_cache: Callable[[str, int, int, Sequence[float], int], Estimate] | None,
    cache_type: str,
    n_ctx: int,
    placed: tuple[int, int],
    split: Sequence[float],
    cpu: Device | None,
    gpus: Sequence[Device],
    margin: int,
    host_margin: int,
) -> bool:
    if estimate_with_cache is None or cache_type != "f16":
        return False
    return _fits(estimate_with_cache("q8_0", n_ctx, placed[0], split, placed[1]), cpu, gpus, margin, host_margin)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _suggest(
    *,
    verdict: Verdict,
    est: Estimate,
    ngl: int,
    total_layers: int,
    n_ctx: int,
    best_ctx: int | None,
    cache_type: str,
    q8_fits: bool,
    requested: int | None,
    auto: tuple[int, int] | None,
    moe: int,
    cpu: Device | None,
    gpus: Sequence[Device],
    margin: int,
    variants: Variants,
) -> str | None:
    if verdict == "fits":
        return None
    if verdict == "partial":
        hints = []
        if best_ctx is not None and best_ctx < n_ctx:
            hints.append(f"--ctx-size {best_ctx}")
        if q8_fits:
            hints.append("--cache-type q8_0")
        more = f"; to put all of them there, use {' or '.join(hints)}" if hints else ""
        if moe:
            return (
                f"all {total_layers} layers fit on the GPU with the experts of the first {moe} kept in RAM "
                f"(llama.cpp's --n-cpu-moe {moe}){more}"
            )
        return f"{ngl} of {total_layers} layers fit on the GPU, the rest runs on the CPU{more}"
    if requested is not None and auto is not None and auto[1]:
        return f"use --gpu-layers auto (every layer on the GPU, the experts of the first {auto[1]} in RAM)"
    if requested is not None and auto is not None and requested != auto[0]:
        return f"use --gpu-layers {auto[0]} (the most layers that fit on the GPU) or --gpu-layers auto"
    if best_ctx is not None and best_ctx < n_ctx:
        text = f"use --ctx-size {best_ctx} (the largest context that fits)"
        return text + (", or --cache-type q8_0 to halve the KV cache" if q8_fits else "")
    if q8_fits:
        return "use --cache-type q8_0 (halves the KV cache)"
    room = (cpu.free if cpu else 0) + sum(max(g.free - margin, 0) for g in gpus)
    overhead = est.total - est.weights
    fitting = [v for v in (variants() if callable(variants) else variants) if v.weights + overhead <= room]
    if fitting:
        best = max(fitting, key=lambda v: v.weights)
        return f"try {best.reference} ({_size(best.weights)} of weights), the largest variant that fits"
    return (
        f"the model needs {_size(est.total)} and this machine has {_size(room)} free: "
        "use a smaller quantisation or a smaller variant of the model"
    )
