"""Make llama.cpp use exactly the extra weight buffers :mod:`modelctl.cpu` decided on, for one load.

llama-cpp-python does not expose ``llama_model_params.use_extra_bufts`` or ``tensor_buft_overrides``; it builds the
params from ``llama_model_default_params()`` inside ``Llama.__init__``. So for the duration of a load we wrap that
function to return params with our choice applied. This runs in the runtime's worker process only, one load at a
time, so the wrap cannot leak into another load.

``auto`` on an AMX CPU turns llama.cpp's extra buffers off (AMX would be taken first and crashes, llama.cpp issue
20824) and names the matrices CPU_REPACK can take in tensor overrides, so the repacked kernels stay.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelctl.cpu import WeightBuffers, takes_repack
from modelctl.gguf import FileSource, read_headers
from modelctl.runtime.ggml import for_llama_cpp

REPACK_BUFFER = "CPU_REPACK"


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


@contextlib.contextmanager
def applied(buffers: WeightBuffers, model_paths: Sequence[Path]) -> Iterator[None]:
    """Within this block, ``llama_cpp.Llama(...)`` loads with ``buffers``' extra weight buffers."""
    import llama_cpp.llama_cpp as low

    keep: list[Any] = []
    overrides = None
    if buffers.repack_by_override:
        buft = _repack_buft()
        names = repacked_tensors(model_paths, buffers) if buft else []
        if names:
            patterns = [p.encode() for p in override_patterns(names)]
            overrides = (_Override * (len(patterns) + 1))()
            for i, pattern in enumerate(patterns):
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
