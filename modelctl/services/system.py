"""``system``: what this machine and this install offer a model, gathered in one value, and the GPU-build notice.

It puts side by side what the runtime was built for (llama.cpp's backends, GPU offload, CPU features) and what the
machine has (GPUs, RAM, the CPU and the extra weight buffers a load will use on it), so that a GPU the runtime
cannot use is said once, with the command that fixes it (:func:`gpu_notice`, also used by ``run`` and ``serve``).
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelctl import __version__, cpu
from modelctl.config import Config
from modelctl.fit import devices as fit_devices
from modelctl.fit.devices import Device
from modelctl.runtime import info
from modelctl.runtime.info import RuntimeInfo
from modelctl.services.models import DiskUsage, disk_usage

CMAKE_FLAGS: dict[str, tuple[str, str]] = {
    "cuda": ("CUDA", "-DGGML_CUDA=on"),
    "rocm": ("ROCm", "-DGGML_HIP=on"),
    "metal": ("Metal", "-DGGML_METAL=on"),
}
"""Device kind -> (what the build is called, the CMake flag that compiles it into llama.cpp)."""
VULKAN = ("Vulkan", "-DGGML_VULKAN=on")
"""The build for a GPU of any other kind."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuBuffers:
    """The extra CPU weight buffers a load uses (``MODELCTL_CPU_BUFFERS``), from :func:`modelctl.cpu.weight_buffers`."""

    setting: str
    choice: str
    """:meth:`modelctl.cpu.WeightBuffers.describe`: ``auto: CPU_REPACK``."""
    amx: bool
    repack: bool

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.setting, "choice": self.choice, "amx": self.amx, "repack": self.repack}


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemReport:
    version: str
    """modelctl's version."""
    runtime: RuntimeInfo
    devices: tuple[Device, ...]
    """GPUs first, then the CPU's RAM (:func:`modelctl.fit.devices.detect`)."""
    cpu_model: str
    cpu_count: int
    cpu_has_amx: bool
    buffers: CpuBuffers
    store: DiskUsage
    notice: str | None
    """:func:`gpu_notice` for these devices and this runtime."""

    @property
    def ram(self) -> Device | None:
        return next((d for d in self.devices if not d.is_gpu), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "modelctl": self.version,
            "runtime": self.runtime.to_json(),
            "devices": [
                {"name": d.name, "kind": d.kind, "index": d.index, "total_bytes": d.total, "free_bytes": d.free}
                for d in self.devices
            ],
            "cpu": {"model": self.cpu_model, "count": self.cpu_count, "amx": self.cpu_has_amx},
            "cpu_buffers": self.buffers.to_json(),
            "store": self.store.to_json(),
            "gpu_notice": self.notice,
        }


def system(config: Config, *, cpuinfo: Path = Path("/proc/cpuinfo")) -> SystemReport:
    """Gather the report: the runtime, the devices, the CPU, the buffer choice and the store's size."""
    runtime = info.probe()
    found = tuple(fit_devices.detect())
    features = cpu.features(cpuinfo)
    buffers = cpu.weight_buffers(config.cpu_buffers, features)
    return SystemReport(
        version=__version__,
        runtime=runtime,
        devices=found,
        cpu_model=cpu_model(cpuinfo),
        cpu_count=os.cpu_count() or 0,
        cpu_has_amx=features.has_amx,
        buffers=CpuBuffers(
            setting=buffers.setting, choice=buffers.describe(), amx=buffers.amx, repack=bool(buffers.repack)
        ),
        store=store_usage(config),
        notice=gpu_notice(found, runtime.gpu_offload, version=runtime.version),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Machine:
    """This machine as a load will use it: the runtime's devices and a line about any GPU it will not use."""

    devices: tuple[Device, ...]
    notice: str | None = None


def runtime_machine(env: Mapping[str, str] | None = None) -> Machine:
    """The devices the bundled runtime will use (:func:`modelctl.fit.devices.for_runtime`: its compiled backends,
    the visibility variables, MIG), from what the system publishes; no GPU context is created."""
    backends = info.gpu_backends()
    view = fit_devices.for_runtime(fit_devices.detect(), backends, os.environ if env is None else env)
    return Machine(devices=view.devices, notice=unused_notice(view, bool(backends)))


def unused_notice(view: fit_devices.RuntimeView, offload_supported: bool) -> str | None:
    """One line about the first GPU the runtime will not use: the reinstall command for a CPU-only build (or one
    built for another GPU), else why (hidden by a variable, a MIG slice, an integrated GPU)."""
    if not view.unused:
        return None
    gpu, why = view.unused[0]
    if not offload_supported:
        return gpu_notice([gpu], False)
    others = f" (and {len(view.unused) - 1} more)" if len(view.unused) > 1 else ""
    if "cannot drive it" in why:
        return f"{gpu.name} is not used{others}: {why}; to build it for this GPU: {reinstall_command(gpu.kind, None)}"
    return f"{gpu.name} is not used{others}: {why}"


def store_usage(config: Config) -> DiskUsage:
    """What ``modelctl df`` reports; a store that does not exist yet is empty (and is not created)."""
    if config.store_dir.is_dir():
        return disk_usage(config)
    existing = next(p for p in (config.home, *config.home.parents) if p.exists())
    return DiskUsage(
        models=0,
        blobs=0,
        store_bytes=0,
        unreferenced_bytes=0,
        partial_bytes=0,
        free_bytes=shutil.disk_usage(existing).free,
        home=config.home,
    )


def gpu_notice(devices: Sequence[Device], offload_supported: bool, *, version: str | None = None) -> str | None:
    """One line when a GPU is present but the runtime cannot offload to it, with the command that reinstalls the
    runtime for that GPU; None when there is no GPU or the runtime can use one.

    ``version`` pins the reinstall (default: the installed llama-cpp-python's, from its package metadata).
    """
    gpu = next((d for d in devices if d.is_gpu), None)
    if gpu is None or offload_supported:
        return None
    pinned = version if version is not None else info.package_version()
    label, _ = CMAKE_FLAGS.get(gpu.kind, VULKAN)
    return (
        f"{gpu.name} is not used: this llama-cpp-python is a CPU-only build, no layers can be offloaded; "
        f"to build it with {label}: {reinstall_command(gpu.kind, pinned)}"
    )


def reinstall_command(kind: str, version: str | None) -> str:
    """The pip command that rebuilds llama-cpp-python with the backend for a GPU of ``kind``."""
    _, flag = CMAKE_FLAGS.get(kind, VULKAN)
    requirement = f"{info.DISTRIBUTION}=={version}" if version else info.DISTRIBUTION
    return f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir "{requirement}"'


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name: ``model name`` in ``cpuinfo`` (x86), else ``Model`` or ``Hardware`` (ARM), else platform's."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if key in found:
            return found[key]
    return platform.processor() or platform.machine() or "unknown"
