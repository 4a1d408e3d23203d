"""Device probes with injected files and fake executables: no real GPU, driver or cgroup needed."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from modelctl.fit import devices
from modelctl.fit.devices import Device, Probes

GIB = 1 << 30
MIB = 1 << 20


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def meminfo(tmp_path: Path, total_kb: int = 16_000_000, available_kb: int = 8_000_000) -> Path:
    p = tmp_path / "meminfo"
    p.write_text(f"MemTotal:       {total_kb} kB\nMemFree:  100 kB\nMemAvailable:   {available_kb} kB\n")
    return p


def test_cpu_memavailable_without_limits(tmp_path: Path) -> None:
    dev = devices.cpu(meminfo(tmp_path), None)
    assert dev == Device(name="CPU RAM", kind="cpu", total=16_000_000 * 1024, free=8_000_000 * 1024)
    assert devices.cpu(tmp_path / "absent").free == 0


def test_cgroup_v2_limit_caps_free_memory_and_page_cache_does_not_count(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    leaf = root / "system.slice" / "job.scope"
    leaf.mkdir(parents=True)
    (root / "memory.max").write_text("max\n")
    (root / "system.slice" / "memory.max").write_text(str(6 * GIB))
    (root / "system.slice" / "memory.current").write_text(str(1 * GIB))
    (leaf / "memory.max").write_text(str(4 * GIB))
    (leaf / "memory.current").write_text(str(3 * GIB))
    (leaf / "memory.stat").write_text(f"anon 1000\ninactive_file {2 * GIB}\nactive_file 5\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/system.slice/job.scope\n")
    assert devices.cgroup_dir(root, self_cgroup) == leaf
    dev = devices.cpu(meminfo(tmp_path), devices.cgroup_dir(root, self_cgroup))
    assert dev.total == 4 * GIB and dev.free == 3 * GIB  # 4 GiB limit - (3 GiB used - 2 GiB reclaimable cache)
    (leaf / "memory.stat").write_text("")
    assert devices.cpu(meminfo(tmp_path), leaf).free == 1 * GIB


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    mem = root / "memory" / "docker" / "abc"
    mem.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text(str(2 * GIB))
    (mem / "memory.usage_in_bytes").write_text(str(GIB // 2))
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    assert devices.cgroup_dir(root, self_cgroup) == mem
    dev = devices.cpu(meminfo(tmp_path), mem)
    assert dev.total == 2 * GIB and dev.free == GIB + GIB // 2
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "unlimited"
    assert devices.cpu(meminfo(tmp_path), mem).free == 8_000_000 * 1024


def test_nvidia_smi(tmp_path: Path) -> None:
    fake = script(
        tmp_path / "nvidia-smi",
        'case "$1" in --query-gpu=index,uuid,name,memory.total,memory.used,memory.free) ;; *) exit 3;; esac\n'
        "echo '0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559, 1559, 80000'\n"
        "echo '1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559, 81459, 100'\n",
    )
    gpus = devices.nvidia(fake)
    assert [g.kind for g in gpus] == ["cuda", "cuda"]
    assert gpus[0].name == "GPU 0: NVIDIA H100 80GB HBM3" and gpus[0].total == 81559 * MIB
    assert gpus[1].free == 100 * MIB and gpus[1].index == 1


def test_nvidia_smi_failures_report_no_gpu(tmp_path: Path) -> None:
    assert devices.nvidia(str(tmp_path / "absent")) == []
    assert devices.nvidia(script(tmp_path / "fails", "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")) == []
    assert devices.nvidia(script(tmp_path / "garbage", "echo 'No devices were found'\n")) == []
    # a hung driver is abandoned after the timeout (were it waited for, pytest-timeout would fail the test)
    assert devices.nvidia(script(tmp_path / "hangs", "exec sleep 3600\n"), timeout=0.3) == []


def test_nvml_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=24 * GIB, free=20 * GIB, used=4 * GIB),
        nvmlDeviceGetName=lambda h: b"NVIDIA L4",
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert devices.nvml() == [Device(name="GPU 0: NVIDIA L4", kind="cuda", total=24 * GIB, free=20 * GIB, index=0)]
    assert calls == ["init", "shutdown"]

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver))
    assert devices.nvml() is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: ImportError
    assert devices.nvml() is None


def test_amd_sysfs(tmp_path: Path) -> None:
    drm = tmp_path / "drm"
    for card, total, used, vendor in (("card0", 16 * GIB, 2 * GIB, "0x1002"), ("card1", 8 * GIB, 0, "0x8086")):
        dev = drm / card / "device"
        dev.mkdir(parents=True)
        (dev / "mem_info_vram_total").write_text(f"{total}\n")
        (dev / "mem_info_vram_used").write_text(f"{used}\n")
        (dev / "vendor").write_text(vendor + "\n")
    (drm / "card0-DP-1").mkdir()  # connectors are not cards
    (drm / "card0" / "device" / "product_name").write_text("Radeon RX 7800 XT\n")
    gpus = devices.amd(drm)
    assert gpus == [Device(name="GPU 0: Radeon RX 7800 XT", kind="rocm", total=16 * GIB, free=14 * GIB, index=0)]
    assert devices.amd(tmp_path / "absent") == []


def test_apple_metal_budget(tmp_path: Path) -> None:
    sysctl = script(
        tmp_path / "sysctl",
        'case "$2" in hw.memsize) echo 17179869184;; iogpu.wired_limit_mb) echo 0;; *) exit 1;; esac\n',
    )
    (gpu,) = devices.apple(sysctl)
    assert gpu.kind == "metal" and gpu.total == gpu.free == 16 * GIB * 2 // 3
    assert devices.metal_budget(64 * GIB) == 48 * GIB
    wired = script(
        tmp_path / "sysctl2",
        'case "$2" in hw.memsize) echo 68719476736;; iogpu.wired_limit_mb) echo 57344;; *) exit 1;; esac\n',
    )
    assert devices.apple(wired)[0].total == 56 * GIB
    vm_stat = script(
        tmp_path / "vm_stat",
        'echo "Mach Virtual Memory Statistics: (page size of 16384 bytes)"\n'
        'echo "Pages free:                               100000."\n'
        'echo "Pages active:                             500000."\n'
        'echo "Pages inactive:                           200000."\n'
        'echo "Pages speculative:                         10000."\n',
    )
    ram = devices.darwin_ram(sysctl, vm_stat)
    assert ram.total == 16 * GIB and ram.free == 310000 * 16384


def test_detect_lists_gpus_then_ram(tmp_path: Path) -> None:
    fake = script(tmp_path / "nvidia-smi", "echo '0, GPU-a, NVIDIA T4, 15360, 0, 15000'\n")
    probes = Probes(
        meminfo=meminfo(tmp_path),
        cgroup_root=tmp_path / "no-cgroup",
        self_cgroup=tmp_path / "no-self",
        drm=tmp_path / "no-drm",
        nvidia_smi=fake,
        use_nvml=False,
        system="linux",
    )
    found = devices.detect(probes)
    assert [d.kind for d in found] == ["cuda", "cpu"]
    assert found[0].free == 15000 * MIB and found[1].free == 8_000_000 * 1024
    sysctl = script(tmp_path / "sysctl", 'case "$2" in hw.memsize) echo 34359738368;; *) exit 1;; esac\n')
    mac = devices.detect(Probes(system="darwin", sysctl=sysctl, vm_stat=str(tmp_path / "none")))
    assert [d.kind for d in mac] == ["metal", "cpu"] and mac[0].total == 32 * GIB * 2 // 3


def test_detect_on_this_machine_is_fast() -> None:
    found = devices.detect(Probes(use_nvml=False, timeout=0.5))
    assert found[-1].kind == "cpu" and found[-1].total > 0
