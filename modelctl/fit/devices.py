"""The memory this machine has for a model: GPUs (NVIDIA, AMD, Apple) and CPU RAM, as the system lists them and as
the bundled runtime will use them (:func:`for_runtime`).

Every probe reads what the system already publishes and never creates a GPU context: NVML through nvidia-ml-py
when it is installed, else ``nvidia-smi`` with a short timeout; AMD's sysfs ``mem_info_vram_*``; Apple's RAM from
``sysctl`` with the Metal budget rule; ``MemAvailable`` capped by the cgroup (v2 or v1) limit. Each takes its paths
and executables as arguments so that tests can point it at fakes; a probe that fails reports nothing rather than
raising, because a missing GPU is not an error.
"""

from __future__ import annotations

import contextlib
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1 << 30
BACKEND_NAMES = {"cuda": "CUDA", "rocm": "ROCm", "vulkan": "Vulkan", "metal": "MTL"}
"""Backend -> the prefix llama.cpp gives its devices: ``CUDA0``, ``ROCm1``, ``Vulkan0``, ``MTL0`` (ggml's names in
the bundled version; older builds called Apple's GPU ``Metal``)."""
BACKEND_ORDER = ("cuda", "rocm", "metal", "vulkan")
"""The order ggml registers its backends (CUDA or its ROCm build first, Vulkan later), which is the order of the
devices a model is split over."""
SYSTEM_KINDS = {"cuda": {"cuda"}, "rocm": {"rocm"}, "metal": {"metal"}, "vulkan": {"cuda", "rocm", "vulkan"}}
"""Which GPUs the system probes found each backend can drive (NVML finds NVIDIA's, sysfs AMD's, sysctl Apple's)."""
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    name: str
    kind: str
    """``cuda``, ``rocm``, ``vulkan``, ``metal`` or ``cpu``."""
    total: int
    free: int
    index: int | None = None
    uuid: str | None = None
    """The driver's id (``GPU-...``, ``MIG-...``), which ``CUDA_VISIBLE_DEVICES`` and friends may name."""
    mig: bool = False
    """A MIG slice of an NVIDIA GPU (its own memory; CUDA uses one slice per process)."""
    integrated: bool = False
    """An integrated GPU (llama.cpp uses one only when there is no discrete GPU)."""
    description: str | None = None
    """What the system calls it (``NVIDIA H100 80GB HBM3``), when ``name`` is the runtime's (``CUDA0``)."""

    @property
    def is_gpu(self) -> bool:
        return self.kind != "cpu"


def parse_size(text: str) -> int:
    """Bytes from ``24GiB``, ``24576MiB``, ``24G`` (binary, as GPU makers count memory) or ``24GB`` (decimal);
    a bare number is bytes. ValueError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (use e.g. 24GiB or 24576MiB)")
    number, unit, binary, byte = match.groups()
    power = "KMGT".find(unit.upper()) + 1 if unit else 0
    base = 1000 if (unit and byte and not binary) else 1024
    if binary and not unit:
        raise ValueError(f"{text!r} is not a size (use e.g. 24GiB or 24576MiB)")
    return int(float(number) * base**power)


def planned(gpus: Sequence[int], backend: str, ram: Device) -> list[Device]:
    """Devices that are not this machine's: GPUs of ``gpus`` bytes each (all free), named as llama.cpp names the
    devices of ``backend``, then ``ram``. Metal has one GPU (Apple's unified memory); ValueError otherwise."""
    if backend not in BACKEND_NAMES:
        raise ValueError(f"unknown GPU backend {backend!r} (use {', '.join(BACKEND_NAMES)})")
    if backend == "metal" and len(gpus) > 1:
        raise ValueError("Metal has one GPU: give --gpu once (the GPU's share of the unified memory)")
    prefix = BACKEND_NAMES[backend]
    out = [Device(name=f"{prefix}{i}", kind=backend, total=size, free=size, index=i) for i, size in enumerate(gpus)]
    return [*out, ram]


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeView:
    """The devices a load will use, in the runtime's order and with its names, and the GPUs it will not use."""

    devices: tuple[Device, ...]
    """GPUs first (``CUDA0``, ...), then the host's RAM."""
    unused: tuple[tuple[Device, str], ...] = ()
    """(a GPU the system has, why the runtime will not use it)."""


def for_runtime(found: Sequence[Device], backends: Sequence[str], env: Mapping[str, str]) -> RuntimeView:
    """What llama.cpp will use of the devices the system lists (``found``, from :func:`detect`): only GPUs of the
    backends compiled into it (``backends``: ``cuda``, ``rocm``, ``metal``, ``vulkan``), each physical GPU once
    (the first backend to list it keeps it, as llama.cpp skips a device id it already has), hidden or reordered by
    ``CUDA_VISIBLE_DEVICES`` (CUDA, and ROCm without its own variables), ``ROCR_VISIBLE_DEVICES`` then
    ``HIP_VISIBLE_DEVICES`` (ROCm), ``GGML_VK_VISIBLE_DEVICES`` (Vulkan), one MIG slice per process (CUDA picks the
    first visible one), integrated GPUs only when there is no discrete one. Names are the runtime's: ``CUDA0``.
    Indices follow the system's listing (nvidia-smi's PCI order, which is CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
    or identical cards)."""
    gpus = [d for d in found if d.is_gpu]
    host = [d for d in found if not d.is_gpu]
    used: list[Device] = []
    taken: set[int] = set()
    for backend in BACKEND_ORDER:
        if backend not in backends:
            continue
        candidates = [g for g in gpus if g.kind in SYSTEM_KINDS[backend]]
        for i, gpu in enumerate(_visible(backend, candidates, env)):
            if id(gpu) in taken:
                continue  # the same GPU through an earlier backend: llama.cpp skips the duplicate
            taken.add(id(gpu))
            name = f"{BACKEND_NAMES[backend]}{i}"
            used.append(_as(gpu, name=name, kind=backend))
    discrete = [d for d in used if not d.integrated]
    if discrete:
        used = discrete
    unused = tuple((g, _why(g, backends, env)) for g in gpus if id(g) not in taken or (g.integrated and discrete))
    return RuntimeView(devices=(*used, *host), unused=unused)


def _as(gpu: Device, *, name: str, kind: str) -> Device:
    return Device(
        name=name,
        kind=kind,
        total=gpu.total,
        free=gpu.free,
        index=gpu.index,
        uuid=gpu.uuid,
        mig=gpu.mig,
        integrated=gpu.integrated,
        description=gpu.description or gpu.name,
    )


def _visible(backend: str, gpus: list[Device], env: Mapping[str, str]) -> list[Device]:
    """The GPUs a backend enumerates, in its order, after its visibility variables."""
    if backend == "cuda":
        shown = _select(gpus, env.get("CUDA_VISIBLE_DEVICES"))
        migs = [g for g in shown if g.mig]
        return [g for g in shown if not g.mig or g is migs[0]]
    if backend == "rocm":
        shown = _select(gpus, env.get("ROCR_VISIBLE_DEVICES"))
        hip = env.get("HIP_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES"))
        return _select(shown, hip)
    if backend == "vulkan":
        return _select(gpus, env.get("GGML_VK_VISIBLE_DEVICES"), uuids=False)
    return gpus


def _select(gpus: list[Device], spec: str | None, *, uuids: bool = True) -> list[Device]:
    """CUDA's rule for a visibility list: indices or (prefixes of) UUIDs, in the list's order; the list ends at the
    first entry that names nothing; an empty list hides everything; unset shows all."""
    if spec is None:
        return list(gpus)
    out: list[Device] = []
    for raw in spec.split(","):
        item = raw.strip()
        if item.isdigit():
            found = gpus[int(item)] if int(item) < len(gpus) else None
        elif uuids:
            matches = [g for g in gpus if g.uuid and g.uuid.lower().startswith(item.lower())]
            found = matches[0] if len(matches) == 1 else None
        else:
            found = None
        if found is None:
            break
        if found not in out:
            out.append(found)
    return out


def _why(gpu: Device, backends: Sequence[str], env: Mapping[str, str]) -> str:
    if not backends:
        return "the runtime is a CPU-only build"
    if gpu.integrated:
        return "llama.cpp uses an integrated GPU only when there is no discrete one"
    fit = [b for b in backends if gpu.kind in SYSTEM_KINDS[b]]
    if not fit:
        built = ", ".join(BACKEND_NAMES[b] if b != "metal" else "Metal" for b in backends)
        return f"the runtime is built for {built}, which cannot drive it"
    if gpu.mig:
        return "CUDA uses one MIG slice per process (name another with CUDA_VISIBLE_DEVICES)"
    variables = [v for v in VISIBILITY if v in env]
    return f"hidden by {' and '.join(variables)}" if variables else "not listed by the runtime"


VISIBILITY = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES")
"""The environment variables that hide GPUs from a backend (read by :func:`for_runtime`)."""


def ram(size: int) -> Device:
    """RAM of ``size`` bytes, all free: the host of a planned machine."""
    return Device(name="RAM", kind="cpu", total=size, free=size)


def host(probes: Probes | None = None) -> Device:
    """This machine's RAM (what :func:`detect` lists last), without asking for GPUs."""
    p = probes or Probes()
    if p.system == "darwin":
        return darwin_ram(p.sysctl, p.vm_stat, timeout=p.timeout)
    return cpu(p.meminfo, cgroup_dir(p.cgroup_root, p.self_cgroup))


@dataclass(frozen=True, kw_only=True, slots=True)
class Probes:
    """Where the probes look (defaults: this machine); tests replace them with files and fake executables."""

    meminfo: Path = Path("/proc/meminfo")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    self_cgroup: Path = Path("/proc/self/cgroup")
    drm: Path = Path("/sys/class/drm")
    cpuinfo: Path = Path("/proc/cpuinfo")
    nvidia_smi: str = "nvidia-smi"
    sysctl: str = "sysctl"
    vm_stat: str = "vm_stat"
    use_nvml: bool = True
    system: str = field(default_factory=lambda: sys.platform)
    machine: str = field(default_factory=platform.machine)
    timeout: float = 2.0


def detect(probes: Probes | None = None) -> list[Device]:
    """GPUs first (NVIDIA, AMD, Apple), then the CPU's RAM."""
    p = probes or Probes()
    gpus: list[Device] = []
    if p.system == "darwin":
        gpus += apple(p.sysctl, timeout=p.timeout)
        return [*gpus, darwin_ram(p.sysctl, p.vm_stat, timeout=p.timeout)]
    found = nvml() if p.use_nvml else None
    gpus += found if found is not None else nvidia(p.nvidia_smi, timeout=p.timeout)
    gpus += amd(p.drm)
    return [*gpus, cpu(p.meminfo, cgroup_dir(p.cgroup_root, p.self_cgroup))]


# --- CPU RAM


def cpu(meminfo: Path = Path("/proc/meminfo"), cgroup: Path | None = None) -> Device:
    """``MemAvailable`` (``MemTotal``), capped by the memory limit of ``cgroup`` and its parents (v2) or v1's."""
    fields = _meminfo(meminfo)
    total = fields.get("MemTotal", 0)
    free = fields.get("MemAvailable", fields.get("MemFree", 0))
    if cgroup is not None:
        limit = cgroup_limit(cgroup)
        if limit is not None:
            limit_total, limit_free = limit
            total = min(total, limit_total) if total else limit_total
            free = min(free, limit_free) if free else limit_free
    return Device(name="CPU RAM", kind="cpu", total=total, free=free)


def _meminfo(path: Path) -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return fields


def cgroup_dir(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> Path:
    """This process's cgroup directory: v2's ``0::/path``, v1's memory controller, else the root."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return root
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            candidate = root / path.lstrip("/")
            return candidate if candidate.is_dir() else root
        if "memory" in controllers.split(","):
            base = root / "memory"
            candidate = base / path.lstrip("/")
            return candidate if candidate.is_dir() else base
    return root


def cgroup_limit(directory: Path) -> tuple[int, int] | None:
    """(limit, limit - usage) of the tightest memory limit from ``directory`` up to the root, or None.

    Usage leaves out the reclaimable page cache (``inactive_file``), as the kernel would drop it before an OOM kill.
    """
    best: tuple[int, int] | None = None
    node: Path | None = directory
    for _ in range(64):
        if node is None:
            break
        found = _v2(node) or _v1(node)
        if found is not None and (best is None or found[1] < best[1]):
            best = found
        parent = node.parent
        node = parent if parent != node and (parent / "memory.max").exists() else None
    return best


def _v2(node: Path) -> tuple[int, int] | None:
    limit = _read_int(node / "memory.max")
    if limit is None:
        return None
    used = (_read_int(node / "memory.current") or 0) - _stat(node / "memory.stat", "inactive_file")
    return limit, max(0, limit - max(used, 0))


def _v1(node: Path) -> tuple[int, int] | None:
    limit = _read_int(node / "memory.limit_in_bytes")
    if limit is None or limit >= 1 << 60:  # "unlimited" is a page-rounded 2^63
        return None
    used = (_read_int(node / "memory.usage_in_bytes") or 0) - _stat(node / "memory.stat", "total_inactive_file")
    return limit, max(0, limit - max(used, 0))


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --- NVIDIA


def nvml() -> list[Device] | None:
    """NVIDIA GPUs through NVML (nvidia-ml-py), or None when it is not installed or not usable."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError and friends: no driver, no GPU
        return None
    try:
        devices = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            slices = _mig_slices(pynvml, handle, i, name)
            if slices is not None:  # MIG on: CUDA sees the slices, not the GPU
                devices += slices
                continue
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                Device(
                    name=f"GPU {i}: {name}",
                    kind="cuda",
                    total=int(mem.total),
                    free=int(mem.free),
                    index=i,
                    uuid=_uuid(pynvml, handle),
                )
            )
        return devices
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _uuid(pynvml: Any, handle: Any) -> str | None:
    try:
        return _text(pynvml.nvmlDeviceGetUUID(handle))
    except Exception:  # an old driver or a fake without it
        return None


def _mig_slices(pynvml: Any, handle: Any, index: int, name: str) -> list[Device] | None:
    """The MIG slices of a GPU in MIG mode, each with its own memory (NVML's MIG device handles); None when MIG is
    off or NVML cannot say."""
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
        if not current:
            return None
        count = int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except Exception:  # not supported (consumer GPUs, old drivers): no MIG
        return None
    slices = []
    for j in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            mem = pynvml.nvmlDeviceGetMemoryInfo(mig)
        except Exception:  # an index without a slice
            continue
        slices.append(
            Device(
                name=f"GPU {index} MIG {j}: {name}",
                kind="cuda",
                total=int(mem.total),
                free=int(mem.free),
                index=index,
                uuid=_uuid(pynvml, mig),
                mig=True,
            )
        )
    return slices


def nvidia(executable: str = "nvidia-smi", *, timeout: float = 2.0) -> list[Device]:
    """NVIDIA GPUs from ``nvidia-smi --query-gpu`` (MiB, CSV); none when it is missing, slow or failing."""
    path = shutil.which(executable)
    if path is None:
        return []
    query = "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free"
    try:
        out = subprocess.run(
            [path, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return []
    devices = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split(",")]
        uuid: str | None = None
        if len(cells) == 6:  # index, uuid, name, total, used, free
            index, uuid, name, total, free = cells[0], cells[1], cells[2], cells[3], cells[5]
        elif len(cells) == 4:  # index, name, total, free (older wrappers and scripts)
            index, name, total, free = cells
        else:
            continue
        if not (index.isdigit() and total.isdigit() and free.isdigit()):
            continue
        devices.append(
            Device(
                name=f"GPU {index}: {name}",
                kind="cuda",
                total=int(total) << 20,
                free=int(free) << 20,
                index=int(index),
                uuid=uuid or None,
            )
        )
    return devices


# --- AMD


def amd(drm: Path = Path("/sys/class/drm")) -> list[Device]:
    """AMD GPUs from ``card*/device/mem_info_vram_{total,used}`` (the amdgpu driver's sysfs files)."""
    devices = []
    try:
        cards = sorted(
            (p for p in drm.glob("card*") if p.name[4:].isdigit()),
            key=lambda p: int(p.name[4:]),
        )
    except OSError:
        return []
    for card in cards:
        dev = card / "device"
        total = _read_int(dev / "mem_info_vram_total")
        used = _read_int(dev / "mem_info_vram_used")
        if not total or used is None:
            continue
        vendor = (_read_text(dev / "vendor") or "0x1002").lower()
        if vendor != "0x1002":
            continue
        label = _read_text(dev / "product_name") or f"AMD GPU ({card.name})"
        index = int(card.name[4:])
        devices.append(
            Device(name=f"GPU {index}: {label}", kind="rocm", total=total, free=max(0, total - used), index=index)
        )
    return devices


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


# --- Apple


def metal_budget(memsize: int) -> int:
    """Metal's recommended working set: about 2/3 of RAM up to 32 GiB, 3/4 above (what llama.cpp can use)."""
    return memsize * 2 // 3 if memsize <= 32 * GIB else memsize * 3 // 4


def _sysctl(executable: str, key: str, timeout: float) -> int | None:
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-n", key], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    text = out.strip()
    return int(text) if text.isdigit() else None


def apple(sysctl: str = "sysctl", *, timeout: float = 2.0) -> list[Device]:
    """Apple silicon's GPU: the Metal budget of the unified memory (``iogpu.wired_limit_mb`` when set)."""
    memsize = _sysctl(sysctl, "hw.memsize", timeout)
    if not memsize:
        return []
    budget = metal_budget(memsize)
    wired = _sysctl(sysctl, "iogpu.wired_limit_mb", timeout)
    if wired:
        budget = min(wired << 20, memsize)
    return [Device(name="Apple GPU (Metal)", kind="metal", total=budget, free=budget, index=0)]


def darwin_ram(sysctl: str = "sysctl", vm_stat: str = "vm_stat", *, timeout: float = 2.0) -> Device:
    """macOS RAM: ``hw.memsize``, free from ``vm_stat`` (free + inactive + speculative pages)."""
    total = _sysctl(sysctl, "hw.memsize", timeout) or 0
    free = total
    path = shutil.which(vm_stat)
    if path is not None:
        try:
            out = subprocess.run([path], capture_output=True, text=True, timeout=timeout, check=True).stdout
        except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
            out = ""
        page = 4096
        pages = 0
        for line in out.splitlines():
            if "page size of" in line:
                digits = [w for w in line.split() if w.isdigit()]
                page = int(digits[0]) if digits else page
            key, _, value = line.partition(":")
            if key.strip() in ("Pages free", "Pages inactive", "Pages speculative"):
                number = value.strip().rstrip(".")
                pages += int(number) if number.isdigit() else 0
        if pages:
            free = min(total, pages * page) if total else pages * page
    return Device(name="RAM", kind="cpu", total=total, free=free)
