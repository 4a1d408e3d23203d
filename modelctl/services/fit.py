"""fit: read the GGUF header(s), estimate what llama.cpp will allocate, and judge it against this machine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl import gguf
from modelctl.fit import devices as _devices
from modelctl.fit.devices import Device
from modelctl.fit.estimate import Estimate, estimate
from modelctl.fit.plan import plan
from modelctl.fit.settings import RunSettings


@dataclass(frozen=True, kw_only=True, slots=True)
class FitReport:
    reference: str | None
    settings: RunSettings
    estimate: Estimate
    devices: tuple[Device, ...]
    needs: dict[str, int] = field(default_factory=dict)
    verdict: str
    gpu_layers: int
    max_ctx_size: int | None
    suggestion: str | None
    bytes_fetched: int = 0

    def to_json(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "reference": self.reference,
            "settings": {
                "ctx_size": e.n_ctx,
                "cache_type": self.settings.cache_type,
                "n_batch": self.settings.n_batch,
                "n_ubatch": self.settings.n_ubatch,
                "gpu_layers": self.gpu_layers,
            },
            "memory": {
                "weights": e.weights,
                "kv_cache": e.kv_cache,
                "compute": e.compute,
                "output": e.output + e.host_extra,
                "total": e.total,
            },
            "devices": [
                {"name": d.name, "kind": d.kind, "total": d.total, "free": d.free, "need": self.needs.get(d.name, 0)}
                for d in self.devices
            ],
            "verdict": self.verdict,
            "gpu_layers": self.gpu_layers,
            "max_ctx_size": self.max_ctx_size,
            "suggestion": self.suggestion,
            "bytes_fetched": self.bytes_fetched,
        }


def fit_local(paths: Sequence[Path], settings: RunSettings, *, devices: Sequence[Device] | None = None) -> FitReport:
    headers = [gguf.read_header(gguf.FileSource(Path(p))) for p in paths]
    return _report(headers, settings, devices, fetched=0)


def fit_remote(
    fetch_range: Callable[[str, int, int], bytes],
    layers: Sequence[tuple[str, int]],
    settings: RunSettings,
    *,
    devices: Sequence[Device] | None = None,
) -> FitReport:
    """Read only the GGUF headers through ``fetch_range(digest, start, end_inclusive)``."""

    def reader(digest: str) -> Callable[[int, int], bytes]:
        return lambda start, end: fetch_range(digest, start, end)

    sources = [gguf.RangedSource(reader(digest), size) for digest, size in layers]
    headers = [gguf.read_header(src) for src in sources]
    return _report(headers, settings, devices, fetched=sum(s.bytes_fetched for s in sources))


def _report(
    headers: list[gguf.GGUFHeader], settings: RunSettings, devices: Sequence[Device] | None, *, fetched: int
) -> FitReport:
    found = tuple(devices if devices is not None else _devices.detect())
    est = estimate(headers, settings)
    trained = headers[0].arch("context_length")
    verdict = plan(
        est,
        found,
        lambda ctx: estimate(headers, settings, n_ctx=ctx),
        int(trained) if isinstance(trained, int) else None,
    )
    return FitReport(
        reference=None,
        settings=settings,
        estimate=est,
        devices=found,
        needs=verdict.needs,
        verdict=verdict.verdict,
        gpu_layers=verdict.gpu_layers,
        max_ctx_size=verdict.max_ctx_size,
        suggestion=verdict.suggestion,
        bytes_fetched=fetched,
    )
