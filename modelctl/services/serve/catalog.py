"""The models the server offers: the store's (by the names ``list`` shows), plus a GGUF file named at start-up.

A request names a model as ``list`` shows it, in full, by ID, or as ``hf.co/...`` / ``ollama://...``; all of these
lead to one stored manifest, whose digest is the model's key: two names for one model share one loaded worker.
The first time a model is needed, ``run``'s own preparation decides its load settings (context, GPU layers, the
artifact's template, system prompt and sampling) against the server's budget; the result is kept, so that a model
reloaded later loads exactly as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

from modelctl import reference
from modelctl.config import Config
from modelctl.errors import NotFound
from modelctl.fit.devices import Device
from modelctl.runtime.conversation import Sampling
from modelctl.runtime.engine import LoadSpec
from modelctl.runtime.process import WorkerEngine
from modelctl.runtime.process import start as start_worker
from modelctl.services.models import ModelRow, list_models
from modelctl.services.run import Prepared, RunOptions, prepare, start
from modelctl.store import models as local


@dataclass(frozen=True, kw_only=True, slots=True)
class Listed:
    """A model the server can answer with, for ``/v1/models`` and ``/api/tags``."""

    key: str
    name: str
    """The full reference (or a file's path)."""
    short: str
    """The name ``list`` shows (or a file's name): the id clients see."""
    size: int
    created: str | None
    parameters: str | None
    quantization: str | None
    architecture: str | None
    format: str = "gguf"


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """A model ready to load: its key, names, the settings ``run`` chose, and what the fit check says it needs."""

    key: str
    name: str
    short: str
    load: LoadSpec
    needs: dict[str, int]
    """Bytes per device (the fit plan's), what the scheduler adds up."""
    fit: dict[str, Any]
    """The fit report (``modelctl fit --json``'s document)."""
    suggestion: str | None
    sampling: Sampling
    """The artifact's sampling defaults; a request's own values override them."""
    system: str | None
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    prepared: list[Prepared] = field(default_factory=list, compare=False, repr=False)
    """The preparation whose worker process is already started, until the first load takes it."""


class Catalog:
    """Names to models, and each model's placement (computed once per model)."""

    def __init__(self, config: Config, options: RunOptions, *, files: tuple[str, ...] = ()) -> None:
        self.config = config
        self.options = replace(options, no_pull=True)
        self._files: dict[str, Listed] = {}
        self._file_names: dict[str, str] = {}
        self._placements: dict[str, Placement] = {}
        self._names: dict[str, tuple[int, Listed]] = {}
        self._lock = threading.Lock()
        for text in files:
            self._add_file(text)

    def _add_file(self, text: str) -> None:
        from modelctl.sources import local as local_files  # httpx and the sources only when a file is served

        found = local_files.open_file(text)
        model = found.model()
        listed = Listed(
            key=found.name,
            name=found.name,
            short=found.short,
            size=sum(p.stat().st_size for p in found.shards),
            created=None,
            parameters=model.parameters,
            quantization=model.quantization,
            architecture=model.architecture,
        )
        self._files[found.name] = listed
        for alias in (text, found.name, found.short):
            self._file_names[alias] = found.name

    def models(self) -> list[Listed]:
        """Every model a request may name: the store's, then the files served."""
        rows = [_listed(row) for row in list_models(self.config)]
        return rows + list(self._files.values())

    def identify(self, name: str) -> Listed:
        """The model ``name`` means; NotFound (404) when the store has no such model, UsageError for a bad name.

        Answers are kept until the store's index changes (a pull, a tag, an rm), so a request pays for no lookup.
        """
        if name in self._file_names:
            return self._files[self._file_names[name]]
        index = self.config.store_dir / "index.json"
        try:
            stamp = index.stat().st_mtime_ns
        except FileNotFoundError:
            hint = f"pull it first: modelctl pull {name}"
            raise NotFound(f"model {name} is not in the local store", hint=hint) from None
        with self._lock:
            known = self._names.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        entry = local.resolve(local.layout(self.config), name)
        model = entry.model
        listed = Listed(
            key=str(entry.desc.digest),
            name=entry.name,
            short=reference.parse(entry.name).short,
            size=model.size,
            created=model.created,
            parameters=model.parameters,
            quantization=model.quantization,
            architecture=model.architecture,
            format=model.format,
        )
        with self._lock:
            self._names[name] = (stamp, listed)
        return listed

    def placement(self, model: Listed, devices: tuple[Device, ...]) -> Placement:
        """How ``model`` loads (prepared once, against ``devices``); DoesNotFit when it cannot fit alone."""
        with self._lock:
            known = self._placements.get(model.key)
        if known is not None:
            return known
        options = replace(self.options, devices=devices)
        prepared = prepare(self.config, model.name, options, _Silent())
        try:
            placement = _placement(model, prepared)
        except BaseException:
            worker = prepared.take_worker()
            if worker is not None:
                worker.close()
            raise
        with self._lock:
            known = self._placements.setdefault(model.key, placement)
        if known is not placement:  # another request prepared it meanwhile
            worker = prepared.take_worker()
            if worker is not None:
                worker.close()
        return known

    def seed(self, prepared: Prepared) -> str:
        """Take a model prepared before the server started (``serve REF``) as its placement; returns its name."""
        model = self.identify(prepared.name)
        with self._lock:
            self._placements[model.key] = _placement(model, prepared)
        return prepared.name

    def forget(self) -> None:
        """Drop the cached placements (after a pull or a delete changed the store)."""
        with self._lock:
            self._placements.clear()

    def start(self, placement: Placement) -> WorkerEngine:
        """Load ``placement`` in a worker process: the one its preparation started, else a new one."""
        if placement.prepared:
            return start(placement.prepared.pop())
        return start_worker(placement.load, name=placement.short)


def _listed(row: ModelRow) -> Listed:
    return Listed(
        key=str(row.digest),
        name=row.name,
        short=row.short,
        size=row.size,
        created=row.created,
        parameters=row.parameters,
        quantization=row.quantization,
        architecture=row.architecture,
        format=row.format,
    )


def _placement(model: Listed, prepared: Prepared) -> Placement:
    fit = prepared.fit.to_json()
    return Placement(
        key=model.key,
        name=model.name,
        short=model.short,
        load=prepared.load,
        needs=dict(prepared.fit.needs),
        fit=fit,
        suggestion=prepared.fit.suggestion,
        sampling=prepared.sampling,
        system=prepared.system,
        notes=prepared.notes,
        details={
            "format": model.format,
            "family": model.architecture,
            "parameter_size": model.parameters,
            "quantization_level": model.quantization,
            "context_length": prepared.load.n_ctx,
            "template": prepared.load.chat_template,
        },
        prepared=[prepared],
    )


class _Silent:
    """The pull reporter for a preparation that never pulls (the server serves what the store has)."""

    def resolved(self, ref: Any, model: Any, to_fetch: int) -> None:
        pass

    def progress(self, event: Any) -> None:
        pass

    def warning(self, message: str) -> None:
        pass
