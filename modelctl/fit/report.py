"""The fit report: read the GGUF header(s), predict what llama.cpp will allocate, and judge it against a machine.

Works from local files or, before any download, from Range reads of the headers on a source: the caller passes
``open_range(digest, start, end_inclusive) -> bytes`` (a source's ranged read), so this module knows nothing of
HTTP, the CLI or the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelctl import artifact, cpu, gguf
from modelctl.cpu import WeightBuffers
from modelctl.errors import GGUFError
from modelctl.fit import devices as _devices
from modelctl.fit.devices import Device
from modelctl.fit.estimate import Buffers, Estimate, estimate, resolve_flash_attn
from modelctl.fit.plan import GPU_MARGIN, Variants, plan
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import ModelShape, parameter_count, quantization, shape_of, tensor_layer


@dataclass(frozen=True, kw_only=True, slots=True)
class FitReport:
    """Everything ``modelctl fit --json`` prints, plus the estimate it came from."""

    reference: str | None
    settings: RunSettings
    estimate: Estimate
    devices: tuple[Device, ...]
    needs: dict[str, int] = field(default_factory=dict)
    verdict: str
    """``fits``, ``partial`` (some layers on the CPU) or ``does_not_fit``."""
    gpu_layers: int
    n_cpu_moe: int = 0
    """MoE layers (the first N) whose experts stay in host memory: the request, or the plan's choice."""
    n_layers: int = 0
    """Offloadable layers (the blocks plus the output layer): ``gpu_layers`` of ``n_layers``."""
    max_ctx_size: int | None
    suggestion: str | None
    bytes_fetched: int = 0
    architecture: str | None = None
    quantization: str | None = None
    parameters: int = 0
    notice: str | None = None
    """A GPU this machine has that the runtime will not use, and why (``--json``: ``notice``)."""
    header: gguf.GGUFHeader | None = field(default=None, repr=False, compare=False)
    """The merged header the estimate came from (to resolve ``--flash-attn auto`` for a device)."""

    @property
    def n_ctx(self) -> int:
        return self.estimate.n_ctx

    @property
    def flash_attn(self) -> str:
        """``on`` or ``off``: what the load does (``auto`` resolved for the device that runs attention)."""
        gpu = next((d.kind for d in self.devices if d.is_gpu), "cpu") if self.gpu_layers else "cpu"
        try:
            shape = shape_of(self.header) if self.header is not None else None
        except GGUFError:
            shape = None
        settings = resolve_flash_attn(self.settings, shape, gpu) if shape is not None else self.settings
        return "on" if settings.flash_attention else "off"

    def device_json(self) -> list[dict[str, Any]]:
        """Per device, what llama.cpp would print for it, in bytes (:func:`device_buffers`)."""
        gpus = iter(self.estimate.gpus)
        out = []
        for d in self.devices:
            b = self.estimate.cpu if not d.is_gpu else next(gpus, Buffers())
            parts = device_buffers(b, gpu=d.is_gpu)
            out.append(
                {
                    "name": d.name,
                    "kind": d.kind,
                    "total": d.total,
                    "free": d.free,
                    "need": sum(parts.values()),
                    "buffers": parts,
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        e = self.estimate
        s = self.settings
        return {
            "reference": self.reference,
            "settings": {
                "ctx_size": e.n_ctx,
                "cache_type": s.cache_type,
                "cache_type_k": s.type_k,
                "cache_type_v": s.type_v,
                "flash_attn": self.flash_attn,
                "n_batch": s.n_batch,
                "n_ubatch": s.n_ubatch,
                "parallel": s.n_seq,
                "gpu_layers": self.gpu_layers,
                "n_cpu_moe": self.n_cpu_moe,
                "split_mode": s.split_mode,
                "tensor_split": list(s.tensor_split),
            },
            "memory": {
                "weights": e.weights,
                "kv_cache": e.kv_cache,
                "compute": e.compute,
                # llama.cpp's logits plus llama-cpp-python's copies of them (host RAM no llama.cpp log shows)
                "output": e.output + e.host_extra,
                "total": e.total,
            },
            "devices": self.device_json(),
            "verdict": self.verdict,
            "gpu_layers": self.gpu_layers,
            "max_ctx_size": self.max_ctx_size,
            "suggestion": self.suggestion,
            "bytes_fetched": self.bytes_fetched,
            "notice": self.notice,
        }


def device_buffers(b: Buffers, *, gpu: bool) -> dict[str, int]:
    """One device's buffers as llama.cpp names them, in bytes, and what no buffer line reports:

    - ``weights``: its ``model buffer size`` lines (on the host: the mapped file range plus any repacked copy);
    - ``kv_cache``: its ``KV buffer size``; ``compute``: its ``compute buffer size`` (on the host this is the
      pinned ``CUDA_Host`` / ``ROCm_Host`` / ``Vulkan_Host`` buffer when there are GPUs);
    - ``output``: the host's ``output buffer size`` (the logits);
    - ``overhead``: on a GPU, :data:`~modelctl.fit.plan.GPU_MARGIN` (the CUDA/ROCm context and BLAS workspaces,
      which no buffer line reports, and the allocator's slack); on the host, llama-cpp-python's own arrays
      (:func:`~modelctl.fit.estimate.host_extra`).
    """
    return {
        "weights": b.weights,
        "kv_cache": b.kv_cache,
        "compute": b.compute,
        "output": b.output,
        "overhead": GPU_MARGIN if gpu else b.host_extra,
    }


def fit_local(
    paths: Sequence[Path],
    settings: RunSettings,
    *,
    devices: Sequence[Device] | None = None,
    variants: Variants = (),
    reference: str | None = None,
) -> FitReport:
    """Fit from local GGUF files (every shard of a split model, in order)."""
    headers = gguf.read_headers([gguf.FileSource(Path(p)) for p in paths])
    return fit_headers(headers, settings, devices=devices, variants=variants, reference=reference, fetched=0)


def fit_remote(
    open_range: Callable[[str, int, int], bytes],
    layers: Sequence[tuple[str, int]],
    settings: RunSettings,
    *,
    devices: Sequence[Device] | None = None,
    variants: Variants = (),
    reference: str | None = None,
) -> FitReport:
    """Fit from the registry: only the GGUF headers of ``layers`` (digest, size) are read, by ranges."""

    def reader(digest: str) -> Callable[[int, int], bytes]:
        return lambda start, end: open_range(digest, start, end)

    sources = [gguf.RangedSource(reader(digest), size) for digest, size in layers]
    headers = gguf.read_headers(sources)
    fetched = sum(s.bytes_fetched for s in sources)
    return fit_headers(headers, settings, devices=devices, variants=variants, reference=reference, fetched=fetched)


def fit_headers(
    headers: Sequence[gguf.GGUFHeader],
    settings: RunSettings,
    *,
    devices: Sequence[Device] | None = None,
    variants: Variants = (),
    reference: str | None = None,
    fetched: int = 0,
    buffers: WeightBuffers | None = None,
) -> FitReport:
    """Estimate and plan for headers already read (``devices`` None: this machine's; ``buffers`` None: the extra
    CPU weight buffers ``settings.cpu_buffers`` gives on this machine's CPU)."""
    header = gguf.merge(headers)
    found = tuple(devices if devices is not None else _devices.detect())
    if buffers is None:
        buffers = cpu.weight_buffers(settings.cpu_buffers, cpu.features())
    shape = shape_of(header)
    trained = shape.n_ctx_train
    n_ctx = settings.resolved_ctx(trained)
    backend = next((d.kind for d in found if d.is_gpu), "cuda")

    def estimate_at(ctx: int, ngl: int, split: Sequence[float], moe: int) -> Estimate:
        placed = replace(settings, n_cpu_moe=moe)
        return estimate(header, placed, n_ctx=ctx, gpu_layers=ngl, gpu_split=split, buffers=buffers, backend=backend)

    def estimate_with_cache(cache: str, ctx: int, ngl: int, split: Sequence[float], moe: int) -> Estimate:
        other = replace(settings, cache_type=cache, cache_type_k=None, cache_type_v=None, n_cpu_moe=moe)
        return estimate(header, other, n_ctx=ctx, gpu_layers=ngl, gpu_split=split, buffers=buffers, backend=backend)

    verdict = plan(
        estimate_at,
        found,
        n_layer=shape.n_layer,
        n_ctx=n_ctx,
        trained_ctx=trained,
        gpu_layers=settings.gpu_layers,
        n_cpu_moe=settings.n_cpu_moe,
        expert_layers=expert_layers(header, shape),
        cache_type=settings.cache_type,
        estimate_with_cache=estimate_with_cache,
        margin=GPU_MARGIN,
        variants=variants,
    )
    return FitReport(
        reference=reference,
        settings=settings,
        estimate=verdict.estimate,
        devices=found,
        needs=verdict.needs,
        verdict=verdict.verdict,
        gpu_layers=verdict.gpu_layers,
        n_cpu_moe=verdict.n_cpu_moe,
        n_layers=verdict.n_layers,
        max_ctx_size=verdict.max_ctx_size,
        suggestion=verdict.suggestion,
        bytes_fetched=fetched,
        architecture=header.architecture,
        quantization=quantization(header),
        parameters=parameter_count(header),
        header=header,
    )


def expert_layers(header: gguf.GGUFHeader, shape: ModelShape) -> int:
    """How many of the first layers hold MoE experts (``--n-cpu-moe`` counts layers from the first): 0 for a dense
    model."""
    if not shape.n_expert:
        return 0
    layers = [tensor_layer(t, shape.n_layer) for t in header.tensors if cpu.EXPERT_TENSORS.search(t.name)]
    return min(max(layers, default=-1) + 1, shape.n_layer)


def as_run_would(settings: RunSettings, model: artifact.Model) -> RunSettings:
    """Without --ctx-size, ``run`` loads with the artifact's packaged context (Docker ``context_size``) when it has
    one, so the check must judge that context too, not the generic default."""
    if settings.n_ctx is None and model.context_size:
        return replace(settings, n_ctx=model.context_size)
    return settings
