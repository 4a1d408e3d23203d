"""The fit check before any download: the GGUF headers of a resolved model, read by ranges from its source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modelctl.digest import Digest
from modelctl.errors import UsageError
from modelctl.fit.devices import Device
from modelctl.fit.report import FitReport, as_run_would, fit_remote
from modelctl.fit.settings import RunSettings
from modelctl.fit.synthetic import card_variants
from modelctl.sources.source import Resolved, Source, read
from modelctl.store import unpack


def fit(
    source: Source, resolved: Resolved, settings: RunSettings, *, devices: Sequence[Device] | None = None
) -> FitReport:
    """Range reads of each GGUF shard's header (no weights), judged at the settings ``run`` would use."""
    model = resolved.model
    name = str(resolved.reference)
    if not model.gguf:
        raise UsageError(f"{name} has no GGUF layer", hint="the fit check reads GGUF models only")

    spans = _packed_spans(source, resolved)

    def fetch(digest: str, start: int, end: int) -> bytes:
        shift = spans.get(digest, (0, 0))[0]  # a GGUF inside an image's tar layer starts after its tar headers
        return read(source, Digest(digest), start + shift, end + shift)  # the fit check hands back its digests

    blobs = [(d.digest, spans[d.digest][1] if d.digest in spans else d.size) for d in model.gguf]
    report = fit_remote(fetch, blobs, as_run_would(settings, model), variants=card_variants(name), devices=devices)
    return replace(report, reference=name)


def _packed_spans(source: Source, resolved: Resolved) -> dict[str, tuple[int, int]]:
    """Layer digest -> (offset, size) of the GGUF inside each tar layer of a model image (none for other formats)."""
    name = str(resolved.reference)
    spans: dict[str, tuple[int, int]] = {}
    for layer in resolved.model.gguf:
        packed = resolved.model.packed.get(layer.digest)
        if packed is None:
            continue
        span = None
        if not packed.gzip:
            head = read(source, layer.digest, 0, min(layer.size, unpack.HEAD_BYTES) - 1)
            span = unpack.member_span(head, packed.member)
        if span is None:
            raise UsageError(
                f"{name} keeps its GGUF where the fit check cannot read it by ranges (a compressed or unusual layer)",
                hint=f"pull it first (modelctl pull {name}), then modelctl fit {name}",
            )
        spans[layer.digest] = span
    return spans
