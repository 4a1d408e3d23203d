"""fit for a reference: from the local files when the model is present, else from the registry by Range reads of
the GGUF headers only (no weights downloaded). Also the pre-download warning of ``pull``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from modelctl import reference
from modelctl.config import Config
from modelctl.errors import NotFound, UsageError
from modelctl.reference import Reference
from modelctl.services import local
from modelctl.services.ranged import take_window

if TYPE_CHECKING:
    from modelctl.artifact import Model
    from modelctl.fit.plan import VariantInfo
    from modelctl.fit.settings import RunSettings
    from modelctl.oci.client import RegistryClient
    from modelctl.services.fit import FitReport


def fit_reference(config: Config, text: str, settings: RunSettings, *, remote: bool = False) -> FitReport:
    from modelctl.services.fit import fit_local

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
            return _named(report, entry.name)
    if ref.is_hugging_face:
        from modelctl.services import huggingface

        return huggingface.fit_remote(config, ref, settings)
    from modelctl.oci.client import RegistryClient
    from modelctl.services.pull import resolve_remote

    with RegistryClient(config) as client:
        _, _, model = resolve_remote(client, ref)
        return remote_report(client, ref, model, settings)


def remote_report(client: RegistryClient, ref: Reference, model: Model, settings: RunSettings) -> FitReport:
    """Fit from the registry: Range reads of each GGUF shard's header."""
    from modelctl.services.fit import fit_remote

    if not model.gguf:
        raise UsageError(f"{ref} has no GGUF layer", hint="the fit check reads GGUF models only")

    def fetch(digest: str, start: int, end: int) -> bytes:
        want = end - start + 1
        with client.open_blob(ref, digest, start=start, end=end) as reader:
            return take_window(reader.iter_chunks(), start - reader.offset, want)

    blobs = [(d.digest, d.size) for d in model.gguf]
    report = fit_remote(fetch, blobs, as_run_would(settings, model), variants=card_variants(str(ref)))
    return _named(report, str(ref))


def card_variants(name: str) -> Callable[[], Sequence[VariantInfo]]:
    """The variants in ``name``'s bundled card, read only if the fit check needs a suggestion."""

    def find() -> Sequence[VariantInfo]:
        from modelctl.services.catalog import variants_for

        return variants_for(name)

    return find


def as_run_would(settings: RunSettings, model: Model) -> RunSettings:
    """Without --ctx-size, ``run`` loads with the artifact's packaged context (Docker ``context_size``) when it has
    one, so the check must judge that context too, not the generic default."""
    if settings.n_ctx is None and model.context_size:
        import dataclasses

        return dataclasses.replace(settings, n_ctx=model.context_size)
    return settings


def _named(report: FitReport, name: str) -> FitReport:
    import dataclasses

    if dataclasses.is_dataclass(report) and hasattr(report, "reference"):
        return dataclasses.replace(report, reference=name)
    return report
