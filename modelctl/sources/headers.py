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


def fit(
    source: Source, resolved: Resolved, settings: RunSettings, *, devices: Sequence[Device] | None = None
) -> FitReport:
    """Range reads of each GGUF shard's header (no weights), judged at the settings ``run`` would use."""
    model = resolved.model
    name = str(resolved.reference)
    if not model.gguf:
        raise UsageError(f"{name} has no GGUF layer", hint="the fit check reads GGUF models only")

    def fetch(digest: str, start: int, end: int) -> bytes:
        return read(source, Digest(digest), start, end)  # the fit check hands back the digests it was given

    blobs = [(d.digest, d.size) for d in model.gguf]
    report = fit_remote(fetch, blobs, as_run_would(settings, model), variants=card_variants(name), devices=devices)
    return replace(report, reference=name)
