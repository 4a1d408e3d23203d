"""What the installed llama.cpp runtime can do: its version, CPU features, compiled-in backends and GPU offload.

llama-cpp-python does not bind ggml's backend registry, so the backends are read through ctypes from the libraries
it ships in ``llama_cpp/lib`` (``ggml_backend_reg_count`` / ``_get`` / ``_name`` and each backend's devices). The
registry holds what this build registers at start-up: CPU always, plus CUDA, HIP (ROCm), Metal, Vulkan, ... when
they were compiled in. ``llama_cpp`` is imported inside the functions, never at import time.

:func:`gpu_backends` answers the fit check's question, which GPU backends a load can use, without importing
``llama_cpp`` or loading a library (which would start CUDA in the CLI's process): the build ships one library per
backend (``libggml-cuda``, ``libggml-hip``, ``libggml-vulkan``, ``libggml-metal``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from modelctl.runtime.ggml import Ggml, text

DISTRIBUTION = "llama-cpp-python"


@dataclass(frozen=True, kw_only=True, slots=True)
class Backend:
    """One ggml backend in the registry, with its devices (``"CPU: Intel(R) Xeon(R) ..."``)."""

    name: str
    devices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "devices": list(self.devices)}


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeInfo:
    version: str | None
    """The llama-cpp-python distribution's version (package metadata), None when it is not installed."""
    system_info: str = ""
    """llama.cpp's ``llama_print_system_info()`` line: ``CPU : SSE3 = 1 | AVX2 = 1 | ...``."""
    backends: tuple[Backend, ...] = ()
    gpu_offload: bool = False
    """``llama_supports_gpu_offload()``: whether layers can be placed on a GPU with this build."""
    error: str | None = None
    """Why the runtime could not be queried (not installed, a library that does not load)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "system_info": self.system_info,
            "backends": [b.to_json() for b in self.backends],
            "gpu_offload": self.gpu_offload,
            "error": self.error,
        }


def package_version() -> str | None:
    """llama-cpp-python's version from its package metadata (no import of llama_cpp)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


BACKEND_LIBRARIES = {"cuda": "ggml-cuda", "rocm": "ggml-hip", "vulkan": "ggml-vulkan", "metal": "ggml-metal"}
"""GPU backend -> the library stem llama.cpp's build gives it (``libggml-cuda.so``, ``ggml-cuda.dll``, ...)."""


def library_dir() -> Path | None:
    """Where the installed llama-cpp-python keeps its libraries (``llama_cpp/lib``), found without importing it."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def gpu_backends(lib_dir: Path | None = None) -> tuple[str, ...]:
    """The GPU backends compiled into the installed runtime (``cuda``, ``rocm``, ``vulkan``, ``metal``), from the
    names of its libraries; () for a CPU-only build or no runtime."""
    where = lib_dir if lib_dir is not None else library_dir()
    if where is None or not where.is_dir():
        return ()
    names = {p.name.lower() for p in where.iterdir()}
    found = []
    for backend, stem in BACKEND_LIBRARIES.items():
        if any(n.startswith((f"lib{stem}.", f"{stem}.")) for n in names):
            found.append(backend)
    return tuple(found)


def probe() -> RuntimeInfo:
    """Ask the installed runtime; a runtime that is missing or broken is described, not raised."""
    version = package_version()
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # OSError: a shared library that does not load
        return RuntimeInfo(version=version, error=f"llama_cpp cannot be imported: {exc}")
    raw = llama_cpp.llama_print_system_info()
    line = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).strip().rstrip("|").strip()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    try:
        backends = registered_backends(Path(llama_cpp.__file__).parent / "lib")
    except (OSError, AttributeError) as exc:  # AttributeError: a symbol this build does not export
        return RuntimeInfo(
            version=version, system_info=line, gpu_offload=offload, error=f"ggml's backend registry: {exc}"
        )
    return RuntimeInfo(version=version, system_info=line, backends=backends, gpu_offload=offload)


def registered_backends(lib_dir: Path) -> tuple[Backend, ...]:
    """The backends in ggml's registry, read from ``libggml`` and ``libggml-base`` in ``lib_dir``."""

    ggml = Ggml(lib_dir)
    backends = []
    for i in range(int(ggml.ggml_backend_reg_count())):
        reg = ggml.ggml_backend_reg_get(i)
        if not reg:
            continue
        devices = []
        for j in range(int(ggml.ggml_backend_reg_dev_count(reg))):
            dev = ggml.ggml_backend_reg_dev_get(reg, j)
            if dev:
                name = text(ggml.ggml_backend_dev_name(dev))
                description = text(ggml.ggml_backend_dev_description(dev))
                devices.append(f"{name}: {description}" if description and description != name else name)
        backends.append(Backend(name=text(ggml.ggml_backend_reg_name(reg)), devices=tuple(devices)))
    return tuple(backends)
