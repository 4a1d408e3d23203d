"""The verdict: does the estimate fit the devices, and what is the largest context that does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelctl.fit.devices import Device
from modelctl.fit.estimate import KV_PAD, Estimate

GPU_MARGIN = 512 << 20
"""Per GPU, for what no buffer reports: the CUDA context and cuBLAS workspace (0.3-0.5 GiB measured in the field)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    verdict: str
    gpu_layers: int
    max_ctx_size: int | None
    suggestion: str | None
    needs: dict[str, int]


def plan(est: Estimate, devices: Sequence[Device], estimate_at: Callable[[int], Estimate], trained: int | None) -> Plan:
    """CPU placement: everything in host RAM. (GPU offload planning is the next step; see the issue notes.)"""
    cpu = next((d for d in devices if d.kind == "cpu"), None)
    free = cpu.free if cpu else 0
    fits = est.total <= free
    limit = max(trained or est.n_ctx, est.n_ctx)
    best = _largest_ctx(estimate_at, free, limit)
    suggestion = None
    if not fits:
        if best:
            suggestion = f"use --ctx-size {best} (the largest context that fits)"
        else:
            suggestion = "the weights alone do not fit: use a smaller quantisation or a smaller variant"
    needs = {cpu.name: est.total} if cpu else {}
    return Plan(
        verdict="fits" if fits else "does_not_fit", gpu_layers=0, max_ctx_size=best, suggestion=suggestion, needs=needs
    )


def _largest_ctx(estimate_at: Callable[[int], Estimate], free: int, limit: int) -> int | None:
    lo, hi = 1, max(1, limit // KV_PAD)
    if estimate_at(KV_PAD).total > free:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_at(mid * KV_PAD).total <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo * KV_PAD
