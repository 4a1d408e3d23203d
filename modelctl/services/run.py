"""run: find a model locally (pulling it when missing), check that it fits, and load it on llama.cpp.

The order is the promise made to users: nothing is loaded before the fit check has said yes (or ``--force``),
and a model that is present locally needs no network at all. ``serve`` prepares a model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl import artifact, reference
from modelctl.config import Config
from modelctl.errors import DoesNotFit, IntegrityError, NotFound, UsageError
from modelctl.fit.report import fit_local
from modelctl.fit.settings import CACHE_TYPES, RunSettings
from modelctl.fit.synthetic import card_variants
from modelctl.oci import safejson
from modelctl.runtime.conversation import Sampling
from modelctl.runtime.engine import LoadSpec
from modelctl.runtime.process import spawn
from modelctl.runtime.process import start as start_worker
from modelctl.services.system import Machine, runtime_machine
from modelctl.store import models as local
from modelctl.store import verify as store_verify

# The pull (httpx, the download engine) is imported only when the model is not in the store yet.

if TYPE_CHECKING:
    from modelctl.fit.devices import Device
    from modelctl.fit.report import FitReport
    from modelctl.oci.descriptor import Descriptor
    from modelctl.runtime.process import Worker, WorkerEngine
    from modelctl.services.pull import Reporter
    from modelctl.sources.local import LocalGGUF
    from modelctl.store import Layout

MIN_AUTO_CTX = 256
"""Below this, shrinking the context to make a model fit would leave no room for a conversation."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    """How to resolve, check and load a model; what the CLI flags of ``run`` and ``serve`` say."""

    ctx_size: int | None = None
    """None: the artifact's context_size, else the fit settings' default, shrunk to what fits."""
    gpu_layers: int | None = None
    """None: ``auto``, the fit plan's choice (0 on CPU-only builds)."""
    cache_type: str = "f16"
    """KV cache type for K and V (f16, q8_0, q4_0); a quantised cache turns flash attention on."""
    no_pull: bool = False
    force: bool = False
    debug: bool = False
    n_threads: int | None = None
    devices: tuple[Device, ...] | None = None
    """What the fit check judges against (None: this machine's free memory now); ``serve`` passes its budget."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepared:
    """A model ready to load: where it is, what the fit check said, and the settings it will load with."""

    name: str
    """The full normalised reference, e.g. ``docker.io/ai/smollm2:135M-Q4_1``, or a local file's absolute path."""
    entry: local.LocalModel | None
    """The model in the store; None for a GGUF file run in place (:mod:`modelctl.sources.local`)."""
    model: artifact.Model
    paths: tuple[Path, ...]
    fit: FitReport
    load: LoadSpec
    system: str | None = None
    """The artifact's default system prompt (Ollama's ``system`` layer), if any."""
    sampling: Sampling = field(default_factory=lambda: _default_sampling())
    """The artifact's sampling defaults (Ollama's ``params`` layer), else llama.cpp's; flags override them."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Things the user should know (a context shrunk to fit, a refusal overridden by --force)."""
    worker: list[Worker] = field(default_factory=list, compare=False, repr=False)
    """The runtime worker started for this model (at most one), until :meth:`take_worker` hands it over."""

    def take_worker(self) -> Worker | None:
        """The worker started by :func:`prepare`, once; None afterwards (a reload after a crash starts another)."""
        return self.worker.pop() if self.worker else None

    @property
    def short(self) -> str:
        """``ai/smollm2:135M-Q4_1``, or a local file's name."""
        return reference.parse(self.name).short if self.entry is not None else self.paths[0].name

    def info(self) -> dict[str, Any]:
        """What ``/show info`` prints."""
        model = self.model
        return {
            "model": self.name,
            "id": self.entry.desc.digest.hex[:12] if self.entry is not None else None,
            "architecture": model.architecture,
            "parameters": model.parameters,
            "quantization": model.quantization,
            "context": self.load.n_ctx,
            "gpu_layers": self.load.n_gpu_layers,
            "n_cpu_moe": self.load.n_cpu_moe,
            "fit": self.fit.to_json(),
            "files": [str(p) for p in self.paths],
        }


def prepare(config: Config, text: str, options: RunOptions, reporter: Reporter) -> Prepared:
    """Resolve ``text`` (pulling unless ``no_pull``), run the fit check and choose the load settings.

    Raises NotFound (exit 3) for an absent model with ``no_pull``, DoesNotFit (exit 6) with the fit check's
    suggestion unless ``force``. The runtime's worker process is started first, so that its start-up (Python,
    llama.cpp) overlaps this work; :func:`start` or :func:`serve` loads the model in it.
    """

    worker = spawn(verbose=options.debug)
    try:
        return _prepare(config, text, options, reporter, worker)
    except BaseException:
        worker.close()
        raise


def _prepare(config: Config, text: str, options: RunOptions, reporter: Reporter, worker: Worker) -> Prepared:
    file = _local_file(text)
    store: Layout | None = None
    entry: local.LocalModel | None = None
    if file is not None:  # read in place: not pulled, not stored
        name, model, paths, short = file.name, file.model(), file.shards, file.short
    else:
        store = local.layout(config)
        entry = _resolve_or_pull(config, text, options, reporter)
        name, model, short = entry.name, entry.model, reference.parse(entry.name).short
        paths = tuple(local.materialise(config, store, entry))
    if not paths:
        raise UsageError(f"{name} has no GGUF file", hint="modelctl runs GGUF models only")
    notes: list[str] = []
    gpu_ok = bool(worker.hello()["gpu_offload"])
    settings = _settings(config, model, options, gpu_ok)
    # the GPUs this runtime will use (its backends, CUDA_VISIBLE_DEVICES and friends, MIG), unless given
    machine = runtime_machine() if options.devices is None else Machine(devices=options.devices)
    report = _fit(paths, settings, name, machine.devices)
    if machine.notice:
        notes.append(machine.notice)
    if report.verdict == "does_not_fit" and options.ctx_size is None:
        wanted = _effective_ctx(settings, report)
        smaller = _shrunk(report, settings, wanted)
        if smaller is not None:
            retry = _fit(paths, smaller, name, machine.devices)
            if retry.verdict != "does_not_fit":
                notes.append(f"context reduced from {wanted} to {smaller.n_ctx} tokens to fit in memory")
                settings, report = smaller, retry
    if report.verdict == "does_not_fit":
        message = f"{short} does not fit in this machine's memory"
        if not options.force:
            raise DoesNotFit(message, hint=_hint(report))
        notes.append(f"{message}; loading anyway (--force)")
    gpu_layers = options.gpu_layers if options.gpu_layers is not None else int(report.gpu_layers or 0)
    if not gpu_ok:
        gpu_layers = 0
    n_cpu_moe = report.n_cpu_moe if gpu_layers else 0  # the plan's experts in RAM: only beside offloaded layers

    load = LoadSpec(
        model_path=paths[0],
        n_ctx=_effective_ctx(settings, report),
        n_batch=settings.n_batch,
        n_ubatch=settings.n_ubatch,
        n_gpu_layers=gpu_layers,
        n_cpu_moe=n_cpu_moe,
        type_k=CACHE_TYPES[settings.cache_type],
        type_v=CACHE_TYPES[settings.cache_type],
        flash_attn=settings.flash_attention,
        swa_full=settings.swa_full,
        n_threads=options.n_threads,
        chat_template=_text_layer(store, model.chat_template),
        verbose=options.debug,
        cpu_buffers=config.cpu_buffers,
        files=paths,
    )
    return Prepared(
        name=name,
        entry=entry,
        model=model,
        paths=paths,
        fit=report,
        load=load,
        system=_text_layer(store, model.system),
        sampling=sampling_from_params(store, model.params, notes),
        notes=tuple(notes),
        worker=[worker],
    )


def start(prepared: Prepared) -> WorkerEngine:
    """Load the prepared model in a worker process (seconds for large models).

    The worker isolates llama.cpp: if it dies, the command reports RuntimeCrashed (exit 9) instead of dying with
    it, and the chat can start a new worker and go on.
    """

    return start_worker(prepared.load, name=prepared.short, worker=prepared.take_worker())


def _local_file(text: str) -> LocalGGUF | None:
    """The GGUF file ``text`` names, read in place; None for a model reference."""
    if not reference.is_file(text):
        return None
    from modelctl.sources import local as local_files  # the sources package (httpx) only for a file path

    return local_files.open_file(text)


def _resolve_or_pull(config: Config, text: str, options: RunOptions, reporter: Reporter) -> local.LocalModel:
    store = local.layout(config)
    try:
        return _intact(store, local.resolve(store, text))
    except NotFound:
        if options.no_pull:
            raise NotFound(
                f"model {text} is not in the local store",
                hint=f"run without --no-pull, or: modelctl pull {text}",
            ) from None
    from modelctl.services.pull import pull

    ref = reference.parse(text)
    result = pull(config, [ref], reporter)[0]
    return local.resolve(store, result.reference)


def _intact(store: Layout, entry: local.LocalModel) -> local.LocalModel:
    """``entry``, once each of its blobs has the size its descriptor gives (a ``stat`` each, no hashing): a truncated
    GGUF is refused in one line before anything loads it, and the fix named."""
    damaged = store_verify.size_checks(store, entry.manifest.blobs)
    if damaged:
        short = reference.parse(entry.name).short
        raise IntegrityError(
            f"blob {damaged[0].digest} of {short} is damaged: {damaged[0].describe()}",
            hint=f"run: modelctl verify --repair {short}",
        )
    return entry


def _settings(config: Config, model: artifact.Model, options: RunOptions, gpu_ok: bool) -> RunSettings:

    changes: dict[str, Any] = {"cpu_buffers": config.cpu_buffers}
    n_ctx = options.ctx_size or model.context_size
    if n_ctx:
        changes["n_ctx"] = n_ctx
    if options.cache_type != "f16":
        changes["cache_type"] = options.cache_type
    if options.gpu_layers is not None:
        changes["gpu_layers"] = options.gpu_layers if gpu_ok else 0
    elif not gpu_ok:
        changes["gpu_layers"] = 0
    return RunSettings(**changes)


def _fit(
    paths: tuple[Path, ...], settings: RunSettings, name: str, devices: tuple[Device, ...] | None
) -> FitReport:

    return fit_local(list(paths), settings, variants=card_variants(name), devices=devices)


def _effective_ctx(settings: RunSettings, report: FitReport) -> int:
    """The context the fit check judged: the settings' own, else the one the report says it resolved."""
    if settings.n_ctx:
        return int(settings.n_ctx)
    resolved = report.to_json().get("settings", {}).get("ctx_size")
    if not isinstance(resolved, int) or resolved <= 0:
        raise UsageError("the fit check did not settle a context size", hint="give one with --ctx-size")
    return resolved


def _shrunk(report: FitReport, settings: RunSettings, wanted: int) -> RunSettings | None:
    """The same settings with the largest context the fit plan allows, when that is still a useful context."""
    best = report.max_ctx_size
    if best is None or best < MIN_AUTO_CTX or best >= wanted:
        return None
    return replace(settings, n_ctx=int(best))


def _hint(report: FitReport) -> str:
    suggestion = report.suggestion or "use a smaller --ctx-size or a smaller variant of the model"
    return f"{suggestion} (or add --force to load it anyway)"


def _default_sampling() -> Sampling:

    return Sampling()


def sampling_from_params(store: Layout | None, desc: Descriptor | None, notes: list[str]) -> Sampling:
    """Sampling defaults from an Ollama ``params`` layer (JSON): temperature, top_p, top_k, seed, num_predict,
    stop. Values of the wrong type or range are ignored with a note, never fatal: the model still runs."""

    sampling = Sampling()
    if desc is None or store is None:
        return sampling
    try:
        doc = safejson.loads(store.read_blob(desc.digest, max_size=1 << 20), what="params layer", max_size=1 << 20)
    except IntegrityError:
        notes.append("the model's params layer is not JSON; using default sampling")
        return sampling
    if not isinstance(doc, dict):
        return sampling
    changes: dict[str, Any] = {}
    ignored: list[str] = []
    for key, field_name, integral, low, high in _PARAMS:
        value = doc.get(key)
        if value is None:
            continue
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None or (integral and not isinstance(number, int)) or not low <= number <= high:
            ignored.append(key)
            continue
        if key == "num_predict" and number <= 0:  # Ollama's -1/-2: no limit
            continue
        changes[field_name] = int(number) if integral else float(number)
    stop = doc.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and all(isinstance(s, str) and s for s in stop):
        changes["stop"] = tuple(stop[:16])
    elif stop is not None:
        ignored.append("stop")
    if ignored:
        notes.append(f"ignored invalid params: {', '.join(ignored)}")
    return replace(sampling, **changes)


_PARAMS: tuple[tuple[str, str, bool, float, float], ...] = (
    ("temperature", "temperature", False, 0.0, 10.0),
    ("top_p", "top_p", False, 0.0, 1.0),
    ("top_k", "top_k", True, 0, 1 << 20),
    ("seed", "seed", True, 0, (1 << 32) - 1),
    ("num_predict", "max_tokens", True, -2, 1 << 20),
)
"""Ollama parameter -> Sampling field, whether it must be a whole number, and its range."""


def _text_layer(store: Layout | None, desc: Descriptor | None) -> str | None:
    """A small text layer (chat template, system prompt) of the model, or None."""
    if desc is None or store is None:
        return None
    text: str = store.read_blob(desc.digest, max_size=1 << 20).decode("utf-8", errors="replace")
    return text.strip() or None
