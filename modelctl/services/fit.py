"""fit: judge whether a model fits this machine, from its local files when it is in the store (or a GGUF file named
by its path), else (or with ``remote``) from Range reads of its GGUF headers on its source, before any download."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from modelctl import reference, sources
from modelctl.config import Config
from modelctl.errors import NotFound, UsageError
from modelctl.fit.devices import Device
from modelctl.fit.report import FitReport, as_run_would, fit_headers, fit_local
from modelctl.fit.settings import RunSettings
from modelctl.fit.synthetic import card_variants
from modelctl.services.system import runtime_machine
from modelctl.sources import headers
from modelctl.sources import local as local_files
from modelctl.store import models as local

__all__ = ["FitReport", "fit_local", "fit_reference"]


def fit_reference(
    config: Config,
    text: str,
    settings: RunSettings,
    *,
    remote: bool = False,
    devices: Sequence[Device] | None = None,
) -> FitReport:
    """The fit of ``text`` (a reference or a GGUF file's path) on ``devices`` (None: this machine's, as the bundled
    runtime will use them, with a notice about any GPU it will not use)."""
    if devices is None:
        machine = runtime_machine()
        report = fit_reference(config, text, settings, remote=remote, devices=machine.devices)
        return replace(report, notice=machine.notice)
    file = local_files.find(text)
    if file is not None:
        if remote:
            raise UsageError(f"--remote reads a registry, and {text} is a local file", hint="drop --remote")
        return fit_headers([file.header], settings, devices=devices, reference=file.name)
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
            report = fit_local(
                paths, as_run_would(settings, entry.model), variants=card_variants(entry.name), devices=devices
            )
            return replace(report, reference=entry.name)
    with sources.Sources(config) as found:
        source = found.for_reference(ref)
        return headers.fit(source, source.resolve(), settings, devices=devices)
