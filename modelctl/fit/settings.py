"""The load settings ``run`` uses, in one frozen value, so the fit check describes exactly the load that follows.

The defaults are modelctl's decision, not llama-cpp-python's: a context of min(trained, 4096) tokens, batch and
micro-batch 512, an f16 KV cache, flash attention off, one sequence, llama-cpp-python's default thread count,
llama-cpp-python's full-size sliding-window cache, and ``auto`` extra CPU weight buffers (``MODELCTL_CPU_BUFFERS``).
A quantised V cache needs flash attention in llama.cpp (it refuses to load otherwise), so a quantised cache switches
it on unless told otherwise.

The other knobs carry llama.cpp's names and meanings (``--parallel``, ``--flash-attn on|off|auto``,
``--cache-type-k``/``-v``, ``--n-cpu-moe``, ``--split-mode``, ``--tensor-split``), so a plan can describe a load
made with llama.cpp's own tools as well as ``run``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelctl.cpu import CPU_BUFFERS

DEFAULT_MAX_CTX = 4096
"""Without --ctx-size, run uses min(trained context, 4096): a 128K default context is what makes models not fit."""

CACHE_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "bf16": 30,
    "q8_0": 8,
    "q4_0": 2,
    "q4_1": 3,
    "iq4_nl": 20,
    "q5_0": 6,
    "q5_1": 7,
}
"""KV cache type name -> ggml type id: every type llama.cpp accepts for the cache (``common/arg.cpp``'s
``kv_cache_types``), what its ``type_k`` / ``type_v`` take."""
UNQUANTISED = frozenset({"f32", "f16", "bf16"})
FLASH_ATTN = ("on", "off", "auto")
SPLIT_MODES = ("layer", "row", "none")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    n_ctx: int | None = None
    """None: min(the model's trained context, DEFAULT_MAX_CTX)."""
    n_batch: int = 512
    n_ubatch: int = 512
    cache_type: str = "f16"
    """KV cache type for both K and V (one of :data:`CACHE_TYPES`), unless ``cache_type_k`` / ``_v`` say."""
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    flash_attn: str | None = None
    """``on``, ``off`` or ``auto`` (llama.cpp's default: on where the device runs it for the model's head sizes);
    None: off, except with a quantised V cache, which llama.cpp cannot use without it."""
    gpu_layers: int | None = None
    """None: auto (as many layers as fit); -1 or more than the model has: all of them."""
    n_cpu_moe: int = 0
    """The MoE expert tensors of the first N layers stay in host memory (llama.cpp's ``--n-cpu-moe``)."""
    split_mode: str = "layer"
    """How layers go over several GPUs: ``layer`` (whole layers), ``row`` (matrices split by rows), ``none``
    (the first GPU only)."""
    tensor_split: tuple[float, ...] = ()
    """Each GPU's share of the layers (``--tensor-split 3,1``); empty: by free memory, as llama.cpp does."""
    n_seq: int = 1
    """Parallel sequences (llama.cpp's ``--parallel``)."""
    kv_unified: bool = False
    offload_kqv: bool = True
    """The KV cache of an offloaded layer lives on its GPU (llama.cpp's default; ``--no-kv-offload`` is False)."""
    swa_full: bool = True
    """llama-cpp-python leaves llama.cpp's default: sliding-window layers get a full-size cache."""
    n_threads: int | None = None
    """None: llama-cpp-python's default (half the CPUs for generation, all of them for prompts)."""
    cpu_buffers: str = "auto"
    """Extra CPU weight buffers (``MODELCTL_CPU_BUFFERS``: auto, all or none; see :mod:`modelctl.cpu`)."""

    def __post_init__(self) -> None:
        for cache in (self.cache_type, self.cache_type_k, self.cache_type_v):
            if cache is not None and cache not in CACHE_TYPES:
                raise ValueError(f"unknown cache type {cache!r} (use {', '.join(CACHE_TYPES)})")
        if self.flash_attn is not None and self.flash_attn not in FLASH_ATTN:
            raise ValueError(f"unknown flash attention setting {self.flash_attn!r} (use on, off or auto)")
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"unknown split mode {self.split_mode!r} (use layer, row or none)")
        if self.n_cpu_moe < 0 or any(share < 0 for share in self.tensor_split):
            raise ValueError("n_cpu_moe and the tensor split must not be negative")
        if self.cpu_buffers not in CPU_BUFFERS:
            raise ValueError(f"unknown CPU buffer setting {self.cpu_buffers!r} (use {', '.join(CPU_BUFFERS)})")
        if self.n_ctx is not None and self.n_ctx < 1:
            raise ValueError("n_ctx must be positive")
        if self.n_batch < 1 or self.n_ubatch < 1 or self.n_seq < 1:
            raise ValueError("n_batch, n_ubatch and n_seq must be positive")

    @property
    def type_k(self) -> str:
        return self.cache_type_k or self.cache_type

    @property
    def type_v(self) -> str:
        return self.cache_type_v or self.cache_type

    @property
    def flash_attention(self) -> bool:
        """Whether the load uses flash attention, ``auto`` taken as on (where a device cannot run it for the
        model, the estimate resolves ``auto`` to off: :func:`modelctl.fit.estimate.resolve_flash_attn`)."""
        if self.flash_attn is not None:
            return self.flash_attn != "off"
        return self.type_v not in UNQUANTISED

    def resolved_ctx(self, trained: int | None) -> int:
        """The context the load asks for (before llama.cpp pads it to a multiple of 256)."""
        if self.n_ctx:
            return self.n_ctx
        return min(trained or DEFAULT_MAX_CTX, DEFAULT_MAX_CTX)

    def llama_kwargs(self, *, n_ctx: int, gpu_layers: int) -> dict[str, Any]:
        """Keyword arguments for ``llama_cpp.Llama`` that describe this load (model path and verbosity aside)."""
        kwargs: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "n_gpu_layers": gpu_layers,
            "type_k": CACHE_TYPES[self.type_k],
            "type_v": CACHE_TYPES[self.type_v],
            "flash_attn": self.flash_attention,
            "swa_full": self.swa_full,
        }
        if self.n_threads is not None:
            kwargs["n_threads"] = kwargs["n_threads_batch"] = self.n_threads
        return kwargs
