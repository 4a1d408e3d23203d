"""The few ggml backend functions llama-cpp-python does not bind, declared once through ctypes.

They live in ``libggml`` (the backend registry) and ``libggml-base`` (backends, devices, buffer types) in the
``llama_cpp/lib`` folder llama-cpp-python installs; llama_cpp has already loaded them, so opening them again costs
nothing. Used to list the compiled-in backends (``modelctl system``) and to find the CPU buffer types tensor
overrides name (``CPU_REPACK``; ``CPU``, where ``--n-cpu-moe`` keeps a MoE model's experts).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_DEVICE = 0
"""``GGML_BACKEND_DEVICE_TYPE_CPU``."""

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[str, type | None, list[type]]] = {
    # name: (library, restype, argtypes)
    "ggml_backend_reg_count": ("ggml", ctypes.c_size_t, []),
    "ggml_backend_reg_get": ("ggml", _P, [ctypes.c_size_t]),
    "ggml_backend_dev_by_type": ("ggml", _P, [ctypes.c_int]),
    "ggml_backend_reg_name": ("ggml-base", ctypes.c_char_p, [_P]),
    "ggml_backend_reg_dev_count": ("ggml-base", ctypes.c_size_t, [_P]),
    "ggml_backend_reg_dev_get": ("ggml-base", _P, [_P, ctypes.c_size_t]),
    "ggml_backend_reg_get_proc_address": ("ggml-base", _P, [_P, ctypes.c_char_p]),
    "ggml_backend_dev_name": ("ggml-base", ctypes.c_char_p, [_P]),
    "ggml_backend_dev_description": ("ggml-base", ctypes.c_char_p, [_P]),
    "ggml_backend_dev_backend_reg": ("ggml-base", _P, [_P]),
    "ggml_backend_dev_buffer_type": ("ggml-base", _P, [_P]),
    "ggml_backend_buft_name": ("ggml-base", ctypes.c_char_p, [_P]),
}


@dataclass(frozen=True, slots=True)
class Ggml:
    """ggml's backend API in one library folder; attribute access returns the declared C function."""

    lib_dir: Path

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in _SIGNATURES:
            raise AttributeError(name)
        return _function(self.lib_dir, name)

    def cpu_buffer_type(self) -> int | None:
        """The CPU device's own buffer type (``ggml_backend_cpu_buffer_type()``, the one llama.cpp compares a tensor
        override against to keep a weight in host memory), or None without a CPU device."""
        device = self.ggml_backend_dev_by_type(CPU_DEVICE)
        buft = self.ggml_backend_dev_buffer_type(device) if device else None
        return int(buft) if buft else None

    def extra_buffer_types(self) -> list[tuple[str, int]]:
        """The CPU device's extra buffer types (``AMX``, ``CPU_REPACK``, ...) as (name, address)."""
        device = self.ggml_backend_dev_by_type(CPU_DEVICE)
        if not device:
            return []
        reg = self.ggml_backend_dev_backend_reg(device)
        address = self.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
        if not address:
            return []
        get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(_P), _P)(address)
        bufts = get_extra(device)
        found = []
        i = 0
        while bufts and bufts[i]:
            found.append((text(self.ggml_backend_buft_name(bufts[i])), int(bufts[i])))
            i += 1
        return found


def for_llama_cpp() -> Ggml:
    """The binding for the libraries of the installed llama_cpp package."""
    import llama_cpp

    return Ggml(Path(llama_cpp.__file__).parent / "lib")


@functools.cache
def _library(lib_dir: Path, stem: str) -> ctypes.CDLL:
    """``lib<stem>.so`` / ``.dylib`` (or ``<stem>.dll``) in ``lib_dir``; OSError when there is none."""
    for pattern in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll", f"lib{stem}.so.*"):
        found = sorted(lib_dir.glob(pattern))
        if found:
            return ctypes.CDLL(str(found[0]))
    raise OSError(f"no {stem} library in {lib_dir}")


@functools.cache
def _function(lib_dir: Path, name: str) -> Callable[..., Any]:
    library, restype, argtypes = _SIGNATURES[name]
    function: Any = getattr(_library(lib_dir, library), name)  # AttributeError: not exported
    function.restype = restype
    function.argtypes = argtypes
    declared: Callable[..., Any] = function
    return declared


def text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else ""
