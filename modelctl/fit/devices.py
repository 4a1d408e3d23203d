"""Memory the machine has: CPU RAM (MemAvailable capped by the cgroup limit) and NVIDIA GPUs (nvidia-smi).

Probes never create a GPU context and take a fraction of a second; every path and executable is injectable.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    name: str
    kind: str
    total: int
    free: int


def cpu(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> Device:
    fields: dict[str, int] = {}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * 1024
    except OSError:
        pass
    total = fields.get("MemTotal", 0)
    free = fields.get("MemAvailable", fields.get("MemFree", 0))
    limit = _read_int(cgroup / "memory.max")
    if limit is not None:
        used = _read_int(cgroup / "memory.current") or 0
        total = min(total, limit) if total else limit
        free = min(free, max(0, limit - used))
    return Device(name="CPU RAM", kind="cpu", total=total, free=free)


def nvidia(executable: str = "nvidia-smi", timeout: float = 2.0) -> list[Device]:
    path = shutil.which(executable)
    if path is None:
        return []
    query = "--query-gpu=index,name,memory.total,memory.free"
    try:
        out = subprocess.run(
            [path, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=timeout, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 4 and cells[2].isdigit() and cells[3].isdigit():
            devices.append(
                Device(
                    name=f"GPU {cells[0]}: {cells[1]}", kind="cuda", total=int(cells[2]) << 20, free=int(cells[3]) << 20
                )
            )
    return devices


def detect() -> list[Device]:
    return [*nvidia(), cpu()]


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
