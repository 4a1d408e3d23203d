"""The catalog: model cards (bundled with modelctl or attached to an artifact as an OCI referrer), ``modelctl card``
and ``modelctl search`` (each bundled variant judged against this machine from its synthetic GGUF header).

The card's figures and the synthetic header are :mod:`modelctl.fit.synthetic`. The store, the source stack (httpx)
and the device probes are imported inside the functions that use them: ``modelctl card`` of a bundled card needs
none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelctl import cards, cpu, reference
from modelctl.config import Config
from modelctl.errors import AuthError, CardError, NotFound, RegistryError
from modelctl.fit.devices import detect
from modelctl.fit.report import fit_headers
from modelctl.fit.settings import RunSettings
from modelctl.fit.synthetic import computed, variant_header
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Manifest
from modelctl.reference import Reference
from modelctl.store import models as local

# The sources (httpx, the registry client) are imported only when a card must be looked up remotely.

if TYPE_CHECKING:
    from modelctl.fit.devices import Device

__all__ = ["FoundCard", "Row", "find_card", "search"]


@dataclass(frozen=True, kw_only=True, slots=True)
class FoundCard:
    text: str
    source: str
    """``local store``, ``registry`` or ``bundled``."""
    where: str
    """The referrer digest or the bundled file."""
    card: cards.Card | None
    """The parsed card; None when an attached card's front matter does not follow the schema."""
    error: CardError | None = None


def find_card(config: Config, text: str, *, remote: bool = False, offline: bool = False) -> FoundCard:
    """The card of ``text``: attached to the artifact (the local store, else the registry) first, then bundled.

    A model in the local store is not looked up in the registry unless ``remote``; ``offline`` never asks it.
    Raises NotFound (exit 3) when there is no card anywhere.
    """
    ref = reference.parse(text)
    checked_local = False
    if not remote:
        found, checked_local = _local_card(config, text)
        if found is not None:
            return found
    if not offline and not checked_local:
        found = _registry_card(config, ref)
        if found is not None:
            return found
    bundled = cards.bundled_text(ref.repository)
    if bundled is not None:
        body, source = bundled
        return FoundCard(text=body, source="bundled", where=source, card=cards.parse(body, source=source))
    raise NotFound(f"no model card for {ref.short}", hint="modelctl search lists the models with a card")


def _parsed(text: str, source: str, where: str) -> FoundCard:
    try:
        return FoundCard(text=text, source=source, where=where, card=cards.parse(text, source=where))
    except CardError as exc:
        return FoundCard(text=text, source=source, where=where, card=None, error=exc)


def _local_card(config: Config, text: str) -> tuple[FoundCard | None, bool]:
    """(the card attached in the local store, whether the model is in the local store)."""

    store = local.layout(config)
    if not store.index_path.is_file():
        return None, False
    matches = local.find(store, text)
    if not matches:
        return None, False
    _, desc = matches[0]
    for referrer in store.referrers(desc.digest):
        if referrer.artifact_type != mt.MODEL_CARD_ARTIFACT:
            continue
        raw = store.read_blob(referrer.digest, max_size=1 << 20)
        manifest = descriptor.parse(raw, algorithm=referrer.digest.algorithm)
        if not isinstance(manifest, Manifest):
            continue
        for layer in manifest.layers:
            if layer.media_type == mt.MODEL_CARD_LAYER and store.has_blob(layer.digest):
                data = store.read_blob(layer.digest, max_size=cards.MAX_CARD)
                return _parsed(data.decode("utf-8", "replace"), "local store", referrer.digest), True
    return None, True


def _registry_card(config: Config, ref: Reference) -> FoundCard | None:
    """The card attached to ``ref`` on its source; None when there is none or the source cannot say."""
    from modelctl import sources

    # best effort: a registry that cannot answer at once falls back to the bundled card (no retries, no waiting)
    quick = dataclasses.replace(config, retries=0)
    try:
        with sources.Sources(quick) as found:
            attached = found.for_reference(ref).card()
    except (NotFound, RegistryError, AuthError):
        return None
    if attached is None:
        return None
    data, where = attached
    return _parsed(data.decode("utf-8", "replace"), "registry", where)


# --- modelctl search


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    repository: str
    tag: str
    parameters: str
    quantization: str
    context_window: int
    size: int
    vram: int
    latest: bool
    fits: str
    """The fit verdict on this machine at run's defaults: ``fits``, ``partial`` or ``does_not_fit``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "reference": f"{self.repository}:{self.tag}",
            "parameters": self.parameters,
            "quantization": self.quantization,
            "context_window": self.context_window,
            "size": self.size,
            "vram": self.vram,
            "latest": self.latest,
            "fits": self.fits,
        }


def _matches(card: cards.Card, term: str) -> bool:
    term = term.lower()
    fields = [card.repository, card.title, card.provider, card.architecture, card.license.name, *card.languages]
    fields += [v.tag for v in card.variants]
    return any(term in f.lower() for f in fields)


def search(term: str | None = None, *, devices: Sequence[Device] | None = None, cpu_buffers: str = "auto") -> list[Row]:
    """The bundled cards' variants (those whose card matches ``term``), each judged against ``devices`` (None:
    this machine's) with the extra CPU weight buffers ``cpu_buffers`` (the CLI passes ``Config.cpu_buffers``)."""

    found = [c for c in cards.bundled() if not term or _matches(c, term)]
    if not found:
        return []
    machine = tuple(devices) if devices is not None else tuple(detect())
    settings = RunSettings(cpu_buffers=cpu_buffers)
    buffers = cpu.weight_buffers(cpu_buffers, cpu.features())
    rows = []
    for card in found:
        for v in card.variants:
            values = computed(card, v)
            verdict = fit_headers([variant_header(card, v)], settings, devices=machine, buffers=buffers).verdict
            rows.append(
                Row(
                    repository=card.repository,
                    tag=v.tag,
                    parameters=v.parameters,
                    quantization=v.quantization,
                    context_window=v.context_window,
                    size=v.size if v.size is not None else values["size"],
                    vram=v.vram if v.vram is not None else values["vram"],
                    latest=v.latest,
                    fits=verdict,
                )
            )
    return rows
