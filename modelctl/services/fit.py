"""fit: judge whether a model fits this machine, from its local files when it is in the store, else (or with
``remote``) from Range reads of its GGUF headers on its source, before any download."""

from __future__ import annotations

from dataclasses import replace

from modelctl import reference, sources
from modelctl.config import Config
from modelctl.errors import NotFound, UsageError
from modelctl.fit.report import FitReport, as_run_would, fit_local
from modelctl.fit.settings import RunSettings
from modelctl.fit.synthetic import card_variants
from modelctl.sources import headers
from modelctl.store import models as local

__all__ = ["FitReport", "fit_local", "fit_reference"]


def fit_reference(config: Config, text: str, settings: RunSettings, *, remote: bool = False) -> FitReport:
    ref = reference.parse(text)
    if not remote:
        store = local.layout(config)
        try:
            entry = local.resolve(store, text)
        except NotFound:
            pass
        else:
            paths = local.materialise(config, store, entry)
            if not paths:
                raise UsageError(f"{entry.name} has no GGUF file", hint="the fit check reads GGUF models only")
            report = fit_local(paths, as_run_would(settings, entry.model), variants=card_variants(entry.name))
            return replace(report, reference=entry.name)
    with sources.Sources(config) as found:
        source = found.for_reference(ref)
        return headers.fit(source, source.resolve(), settings)
