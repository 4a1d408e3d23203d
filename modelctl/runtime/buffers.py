"""Make llama.cpp put the weights where modelctl decided, for one load: exactly the extra weight buffers
:mod:`modelctl.cpu` chose, and a MoE model's experts in host memory for the layers the fit plan says.

llama-cpp-python does not expose ``llama_model_params.use_extra_bufts`` or ``tensor_buft_overrides``; it builds the
params from ``llama_model_default_params()`` inside ``Llama.__init__``. So for the duration of a load we wrap that
function to return params with our choice applied. This runs in the runtime's worker process only, one load at a
time, so the wrap cannot leak into another load.

``auto`` on an AMX CPU turns llama.cpp's extra buffers off (AMX would be taken first and crashes, llama.cpp issue
20824) and names the matrices CPU_REPACK can take in tensor overrides, so the repacked kernels stay.

Experts kept on the host (``--n-cpu-moe N``, what the fit plan chooses when a MoE model does not fit the GPU whole)
are tensor overrides too, to the CPU's own buffer type: llama.cpp then picks their buffer from its host list (the
GPU's pinned host type, which mmap turns into the mapped file; the extra types only where ``use_extra_bufts`` is
on, which ``auto`` keeps off on AMX CPUs), the rule :func:`modelctl.fit.estimate.estimate` counts. They come first:
llama.cpp uses the first pattern that matches a name.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelctl.cpu import EXPERT_TENSORS, WeightBuffers, takes_repack
from modelctl.gguf import FileSource, read_headers
from modelctl.runtime.ggml import for_llama_cpp

REPACK_BUFFER = "CPU_REPACK"
EXPERT_SUFFIX = EXPERT_TENSORS.pattern
"""The expert tensors' rule, as llama.cpp's ECMAScript regex reads it (the same text: both dialects agree here)."""


class _Override(ctypes.Structure):
    """``struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }``"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def override_patterns(names: Sequence[str]) -> list[str]:
    """ECMAScript regexes matching exactly ``names``, one per block-tensor suffix (``blk.N.<suffix>``).

    llama.cpp compiles every pattern once per tensor, so a few grouped patterns load far faster than one per name.
    """
    by_suffix: dict[str, list[str]] = {}
    singles: list[str] = []
    for name in names:
        match = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        if match:
            by_suffix.setdefault(match.group(2), []).append(match.group(1))
        else:
            singles.append(name)
    patterns = [
        rf"^blk\.({'|'.join(layers)})\.{re.escape(suffix)}$" for suffix, layers in sorted(by_suffix.items())
    ]
    patterns += [f"^{re.escape(name)}$" for name in singles]
    return patterns


def expert_pattern(n_cpu_moe: int) -> str | None:
    """One ECMAScript regex matching the expert tensors (weights and biases) of layers ``0 .. n_cpu_moe - 1``."""
    if n_cpu_moe <= 0:
        return None
    layers = "|".join(str(i) for i in range(n_cpu_moe))
    return rf"^blk\.({layers}){EXPERT_SUFFIX}\."


def repacked_tensors(model_paths: Sequence[Path], buffers: WeightBuffers) -> list[str]:
    """Names of the weight matrices CPU_REPACK takes in these GGUF files (the fit check's rule)."""

    names = []
    for header in read_headers([FileSource(p) for p in model_paths]):
        for t in header.tensors:
            if takes_repack(t.name, t.ggml_type, t.shape, buffers.repack):
                names.append(t.name)
    return names


def _repack_buft() -> int | None:
    """The address of llama.cpp's CPU_REPACK buffer type, or None when this build has none."""

    try:
        found = dict(for_llama_cpp().extra_buffer_types())
    except (OSError, AttributeError):  # a build without these libraries or symbols: no overrides
        return None
    return found.get(REPACK_BUFFER)


def _cpu_buft() -> int | None:
    """The address of the CPU's own buffer type, or None when this build's libraries do not say."""

    try:
        return for_llama_cpp().cpu_buffer_type()
    except (OSError, AttributeError):
        return None


def overrides_for(buffers: WeightBuffers, model_paths: Sequence[Path], n_cpu_moe: int = 0) -> list[tuple[str, int]]:
    """(pattern, buffer type address) in the order llama.cpp should try them: the experts of the first ``n_cpu_moe``
    layers to the CPU, then the matrices CPU_REPACK takes where ``buffers`` places them by name."""

    found: list[tuple[str, int]] = []
    experts = expert_pattern(n_cpu_moe)
    cpu_buft = _cpu_buft() if experts else None
    if experts and cpu_buft:
        found.append((experts, cpu_buft))
    if buffers.repack_by_override:
        buft = _repack_buft()
        names = repacked_tensors(model_paths, buffers) if buft else []
        found += [(pattern, buft) for pattern in override_patterns(names) if buft]
    return found


@contextlib.contextmanager
def applied(buffers: WeightBuffers, model_paths: Sequence[Path], n_cpu_moe: int = 0) -> Iterator[None]:
    """Within this block, ``llama_cpp.Llama(...)`` loads with ``buffers``' extra weight buffers and the experts of
    the first ``n_cpu_moe`` layers in host memory."""
    import llama_cpp.llama_cpp as low

    keep: list[Any] = []
    overrides = None
    chosen = overrides_for(buffers, model_paths, n_cpu_moe)
    if chosen:
        patterns = [pattern.encode() for pattern, _ in chosen]
        overrides = (_Override * (len(chosen) + 1))()  # the last one all zero: the list's end
        for i, (pattern, (_, buft)) in enumerate(zip(patterns, chosen, strict=True)):
            overrides[i].pattern = pattern
            overrides[i].buft = buft
        keep += [patterns, overrides]  # alive until the load returns

    original = low.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = buffers.use_extra_bufts
        if overrides is not None:
            p.tensor_buft_overrides = ctypes.addressof(overrides)
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = original
        keep.clear()
