"""The devices a load will use, from recorded device lists and environments: the runtime's compiled backends, its
names and order, the visibility variables, MIG slices and integrated GPUs (no GPU, driver or runtime needed)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from modelctl.fit import devices
from modelctl.fit.devices import Device, for_runtime
from modelctl.runtime import info
from modelctl.services.system import Machine, unused_notice

GIB = 1 << 30
RAM = Device(name="CPU RAM", kind="cpu", total=64 * GIB, free=60 * GIB)
H100 = Device(name="GPU 0: NVIDIA H100", kind="cuda", total=80 * GIB, free=79 * GIB, index=0, uuid="GPU-8932f937-aa")
L4 = Device(name="GPU 1: NVIDIA L4", kind="cuda", total=24 * GIB, free=23 * GIB, index=1, uuid="GPU-1234abcd-bb")
IGPU = Device(name="GPU 0: AMD Radeon Graphics", kind="rocm", total=2 * GIB, free=2 * GIB, index=0)
MI300 = Device(name="GPU 1: AMD Instinct MI300X", kind="rocm", total=192 * GIB, free=190 * GIB, index=1)
MI210 = Device(name="GPU 2: AMD Instinct MI210", kind="rocm", total=64 * GIB, free=64 * GIB, index=2)
APPLE = Device(name="Apple GPU (Metal)", kind="metal", total=48 * GIB, free=48 * GIB, index=0)


def names(view: devices.RuntimeView) -> list[tuple[str, str | None]]:
    return [(d.name, d.description) for d in view.devices]


def test_a_cpu_only_build_plans_for_the_cpu_alone_and_says_why() -> None:
    view = for_runtime([H100, RAM], (), {})
    assert view.devices == (RAM,)
    assert view.unused == ((H100, "the runtime is a CPU-only build"),)
    notice = unused_notice(view, False)
    assert notice is not None and "GPU 0: NVIDIA H100 is not used" in notice and "-DGGML_CUDA=on" in notice


def test_cuda_build_uses_only_nvidia_gpus_in_order_with_cuda_names() -> None:
    view = for_runtime([H100, L4, IGPU, RAM], ("cuda",), {})
    assert names(view)[:2] == [("CUDA0", H100.name), ("CUDA1", L4.name)]
    assert [d.kind for d in view.devices] == ["cuda", "cuda", "cpu"]
    ((gpu, why),) = view.unused
    assert gpu is IGPU and "built for CUDA" in why
    notice = unused_notice(view, True)
    assert (
        notice is not None and notice.startswith("GPU 0: AMD Radeon Graphics is not used") and "-DGGML_HIP=on" in notice
    )


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1", [L4]),
        ("1,0", [L4, H100]),
        ("0,-1,1", [H100]),  # CUDA stops at the first entry that names no device
        ("0,7", [H100]),
        ("", []),
        ("GPU-1234", [L4]),  # a UUID prefix
        ("GPU-8932f937-aa,GPU-1234abcd-bb", [H100, L4]),
        ("GPU-", []),  # ambiguous prefix: names nothing
    ],
)
def test_cuda_visible_devices(visible: str, expected: list[Device]) -> None:
    view = for_runtime([H100, L4, RAM], ("cuda",), {"CUDA_VISIBLE_DEVICES": visible})
    gpus = [d for d in view.devices if d.is_gpu]
    assert [(d.name, d.uuid) for d in gpus] == [(f"CUDA{i}", g.uuid) for i, g in enumerate(expected)]
    hidden = [g for g, why in view.unused]
    assert {g.name for g in hidden} == {g.name for g in (H100, L4) if g not in expected}
    assert all(why == "hidden by CUDA_VISIBLE_DEVICES" for _, why in view.unused)


def test_mig_one_slice_per_process() -> None:
    slices = [
        Device(name=f"GPU 0 MIG {j}: NVIDIA A100", kind="cuda", total=10 * GIB, free=9 * GIB, index=0, uuid=u, mig=True)
        for j, u in enumerate(("MIG-aaaa-1111", "MIG-bbbb-2222", "MIG-cccc-3333"))
    ]
    view = for_runtime([*slices, RAM], ("cuda",), {})
    assert [(d.name, d.total, d.uuid) for d in view.devices if d.is_gpu] == [("CUDA0", 10 * GIB, "MIG-aaaa-1111")]
    assert all("one MIG slice" in why for _, why in view.unused) and len(view.unused) == 2
    chosen = for_runtime([*slices, RAM], ("cuda",), {"CUDA_VISIBLE_DEVICES": "MIG-bbbb"})
    assert [d.uuid for d in chosen.devices if d.is_gpu] == ["MIG-bbbb-2222"]


def test_rocm_visibility_rocr_first_then_hip() -> None:
    gpus = [MI300, MI210, RAM]
    assert names(for_runtime(gpus, ("rocm",), {}))[:2] == [("ROCm0", MI300.name), ("ROCm1", MI210.name)]
    hip = for_runtime(gpus, ("rocm",), {"HIP_VISIBLE_DEVICES": "1"})
    assert names(hip)[:1] == [("ROCm0", MI210.name)] and len(hip.devices) == 2
    both = for_runtime(gpus, ("rocm",), {"ROCR_VISIBLE_DEVICES": "1,0", "HIP_VISIBLE_DEVICES": "0"})
    assert names(both)[:1] == [("ROCm0", MI210.name)]  # HIP's 0 is the first GPU ROCR left
    cuda_var = for_runtime(gpus, ("rocm",), {"CUDA_VISIBLE_DEVICES": "1"})
    assert names(cuda_var)[:1] == [("ROCm0", MI210.name)]  # HIP honours CUDA's variable without its own
    ((_, why),) = hip.unused
    assert why == "hidden by HIP_VISIBLE_DEVICES"


def test_vulkan_sees_every_vendor_and_ggml_vk_visible_devices() -> None:
    view = for_runtime([H100, MI300, RAM], ("vulkan",), {})
    assert names(view)[:2] == [("Vulkan0", H100.name), ("Vulkan1", MI300.name)]
    one = for_runtime([H100, MI300, RAM], ("vulkan",), {"GGML_VK_VISIBLE_DEVICES": "1"})
    assert names(one)[:1] == [("Vulkan0", MI300.name)] and len(one.devices) == 2


def test_cuda_and_vulkan_build_lists_each_gpu_once() -> None:
    view = for_runtime([H100, MI300, RAM], ("cuda", "vulkan"), {})
    # CUDA registers first and keeps the NVIDIA card; Vulkan's numbering still counts it (Vulkan0 is skipped)
    assert names(view)[:2] == [("CUDA0", H100.name), ("Vulkan1", MI300.name)]
    assert view.unused == ()


def test_integrated_gpus_only_without_a_discrete_one() -> None:
    apu = Device(name="GPU 0: AMD Radeon 780M", kind="rocm", total=4 * GIB, free=4 * GIB, index=0, integrated=True)
    alone = for_runtime([apu, RAM], ("vulkan",), {})
    assert names(alone)[:1] == [("Vulkan0", apu.name)]
    beside = for_runtime([apu, MI300, RAM], ("vulkan",), {})
    assert [d.name for d in beside.devices] == ["Vulkan1", "CPU RAM"]
    assert "integrated" in beside.unused[0][1]


def test_metal() -> None:
    view = for_runtime([APPLE, RAM], ("metal",), {})
    assert names(view)[0] == ("MTL0", APPLE.name) and view.devices[0].kind == "metal"


def test_compiled_backends_from_the_runtime_libraries(tmp_path: Path) -> None:
    assert info.gpu_backends(tmp_path / "absent") == ()
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libggml.so", "libggml-base.so.0", "libggml-cpu.so", "libllama.so"):
        (lib / name).touch()
    assert info.gpu_backends(lib) == ()
    (lib / "libggml-cuda.so").touch()
    (lib / "libggml-vulkan.so.0.9.4").touch()
    assert info.gpu_backends(lib) == ("cuda", "vulkan")
    (lib / "libggml-metal.dylib").touch()
    (lib / "ggml-hip.dll").touch()
    assert info.gpu_backends(lib) == ("cuda", "rocm", "vulkan", "metal")


def test_this_runtime_is_cpu_only() -> None:
    # the venv's llama-cpp-python is the default CPU build (CI has no GPU): the fit plans for the CPU alone
    assert info.gpu_backends() == ()


def test_nvml_lists_mig_slices_with_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = {"h0": (80, 70), "m0": (20, 19), "m1": (40, 40), "h1": (24, 24)}

    def memory(h: str) -> types.SimpleNamespace:
        total, free = mem[h]
        return types.SimpleNamespace(total=total * GIB, free=free * GIB)

    def mig_handle(h: str, j: int) -> str:
        if j > 1:
            raise RuntimeError("no slice")
        return f"m{j}"

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA A100" if h == "h0" else "NVIDIA L4",
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUUID=lambda h: {"h0": "GPU-a", "h1": "GPU-b", "m0": "MIG-x", "m1": "MIG-y"}[h],
        nvmlDeviceGetMigMode=lambda h: (1, 1) if h == "h0" else (0, 0),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = devices.nvml()
    assert found is not None
    assert [(d.name, d.total // GIB, d.uuid, d.mig) for d in found] == [
        ("GPU 0 MIG 0: NVIDIA A100", 20, "MIG-x", True),
        ("GPU 0 MIG 1: NVIDIA A100", 40, "MIG-y", True),
        ("GPU 1: NVIDIA L4", 24, "GPU-b", False),
    ]
    view = for_runtime([*found, RAM], ("cuda",), {})
    assert [(d.name, d.uuid) for d in view.devices if d.is_gpu] == [("CUDA0", "MIG-x"), ("CUDA1", "GPU-b")]


def test_a_visible_machine_has_no_notice() -> None:
    assert unused_notice(for_runtime([H100, RAM], ("cuda",), {}), True) is None
    assert Machine(devices=(RAM,)).notice is None
