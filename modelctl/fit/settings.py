"""The load settings ``run`` uses, in one frozen value, so the fit check describes exactly the load that follows.

The defaults are modelctl's decision, not llama-cpp-python's: a context of min(trained, 4096) tokens, batch and
micro-batch 512, an f16 KV cache, flash attention off, one sequence, llama-cpp-python's default thread count,
llama-cpp-python's full-size sliding-window cache, and ``auto`` extra CPU weight buffers (``MODELCTL_CPU_BUFFERS``).
A quantised V cache needs flash attention in llama.cpp (it refuses to load otherwise), so ``q8_0`` and ``q4_0``
caches switch it on unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelctl.cpu import CPU_BUFFERS

DEFAULT_MAX_CTX = 4096
"""Without --ctx-size, run uses min(trained context, 4096): a 128K default context is what makes models not fit."""

CACHE_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
"""KV cache type name -> ggml type id (what llama.cpp's ``type_k`` / ``type_v`` take)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    n_ctx: int | None = None
    """None: min(the model's trained context, DEFAULT_MAX_CTX)."""
    n_batch: int = 512
    n_ubatch: int = 512
    cache_type: str = "f16"
    """KV cache type for both K and V: f16, q8_0 or q4_0."""
    flash_attn: bool | None = None
    """None: off, except with a quantised cache, which llama.cpp cannot use without it."""
    gpu_layers: int | None = None
    """None: auto (as many layers as fit); -1 or more than the model has: all of them."""
    n_seq: int = 1
    swa_full: bool = True
    """llama-cpp-python leaves llama.cpp's default: sliding-window layers get a full-size cache."""
    n_threads: int | None = None
    """None: llama-cpp-python's default (half the CPUs for generation, all of them for prompts)."""
    cpu_buffers: str = "auto"
    """Extra CPU weight buffers (``MODELCTL_CPU_BUFFERS``: auto, all or none; see :mod:`modelctl.cpu`)."""

    def __post_init__(self) -> None:
        if self.cache_type not in CACHE_TYPES:
            raise ValueError(f"unknown cache type {self.cache_type!r} (use {', '.join(CACHE_TYPES)})")
        if self.cpu_buffers not in CPU_BUFFERS:
            raise ValueError(f"unknown CPU buffer setting {self.cpu_buffers!r} (use {', '.join(CPU_BUFFERS)})")
        if self.n_ctx is not None and self.n_ctx < 1:
            raise ValueError("n_ctx must be positive")
        if self.n_batch < 1 or self.n_ubatch < 1 or self.n_seq < 1:
            raise ValueError("n_batch, n_ubatch and n_seq must be positive")

    @property
    def flash_attention(self) -> bool:
        """Whether the load uses flash attention (what llama.cpp will actually do)."""
        if self.flash_attn is not None:
            return self.flash_attn
        return self.cache_type != "f16"

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
            "type_k": CACHE_TYPES[self.cache_type],
            "type_v": CACHE_TYPES[self.cache_type],
            "flash_attn": self.flash_attention,
            "swa_full": self.swa_full,
        }
        if self.n_threads is not None:
            kwargs["n_threads"] = kwargs["n_threads_batch"] = self.n_threads
        return kwargs
