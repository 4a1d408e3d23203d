"""``modelctl system``: the GPU-build notice, the report's JSON shape, and its rendering (runtime and probes faked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelctl import config as config_mod
from modelctl.cli.app import run
from modelctl.fit.devices import Device
from modelctl.runtime import info
from modelctl.runtime.info import Backend, RuntimeInfo
from modelctl.services import system as system_mod
from modelctl.services.system import cpu_model, gpu_notice, reinstall_command

RAM = Device(name="CPU RAM", kind="cpu", total=64 << 30, free=60 << 30)
NVIDIA = Device(name="GPU 0: NVIDIA H100 80GB HBM3", kind="cuda", total=80 << 30, free=79 << 30, index=0)
AMD = Device(name="GPU 0: AMD Instinct MI300X", kind="rocm", total=192 << 30, free=190 << 30, index=0)
APPLE = Device(name="Apple GPU (Metal)", kind="metal", total=48 << 30, free=48 << 30, index=0)
OTHER = Device(name="GPU 0: Intel Arc A770", kind="xe", total=16 << 30, free=16 << 30, index=0)

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f amx_bf16 amx_tile amx_int8
"""


@pytest.mark.parametrize(
    ("gpu", "flag", "label"),
    [
        (NVIDIA, "-DGGML_CUDA=on", "CUDA"),
        (AMD, "-DGGML_HIP=on", "ROCm"),
        (APPLE, "-DGGML_METAL=on", "Metal"),
        (OTHER, "-DGGML_VULKAN=on", "Vulkan"),
    ],
)
def test_gpu_with_a_cpu_only_runtime_names_the_reinstall_for_that_gpu(gpu: Device, flag: str, label: str) -> None:
    notice = gpu_notice([gpu, RAM], False, version="0.3.36")
    assert notice is not None
    assert "\n" not in notice
    assert gpu.name in notice and "CPU-only" in notice and f"with {label}:" in notice
    assert notice.endswith(
        f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir "llama-cpp-python==0.3.36"'
    )


@pytest.mark.parametrize(
    ("found", "offload"),
    [([RAM], False), ([RAM], True), ([NVIDIA, RAM], True), ([APPLE, RAM], True), ([], False)],
)
def test_no_notice_without_a_gpu_or_with_a_gpu_build(found: list[Device], offload: bool) -> None:
    assert gpu_notice(found, offload, version="0.3.36") is None


def test_notice_pins_the_installed_version_by_default() -> None:
    installed = info.package_version()
    assert installed is not None  # the venv has llama-cpp-python
    notice = gpu_notice([NVIDIA, RAM], False)
    assert notice is not None and f'"llama-cpp-python=={installed}"' in notice


def test_the_first_gpu_decides_the_build() -> None:
    notice = gpu_notice([AMD, NVIDIA, RAM], False, version="1.0")
    assert notice is not None and "-DGGML_HIP=on" in notice and "GGML_CUDA" not in notice


def test_reinstall_without_a_known_version_is_unpinned() -> None:
    assert reinstall_command("cuda", None) == (
        'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir "llama-cpp-python"'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (XEON_CPUINFO, "Intel(R) Xeon(R) Platinum 8480+"),
        (
            "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nModel\t\t: Raspberry Pi 4 Model B\n",
            "Raspberry Pi 4 Model B",
        ),
        ("processor\t: 0\nHardware\t: Qualcomm\n", "Qualcomm"),
    ],
)
def test_cpu_model_from_cpuinfo(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_model(path) == expected


def test_cpu_model_without_cpuinfo_falls_back_to_the_platform(tmp_path: Path) -> None:
    assert cpu_model(tmp_path / "missing")


def test_backend_registry_needs_the_libraries(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no ggml library"):
        info.registered_backends(tmp_path)


# --- the report, with the runtime and the device probes faked


def _fake_probes(monkeypatch: pytest.MonkeyPatch, found: list[Device], runtime: RuntimeInfo) -> None:
    monkeypatch.setattr(system_mod.info, "probe", lambda: runtime)
    monkeypatch.setattr(system_mod.fit_devices, "detect", lambda: list(found))


CPU_RUNTIME = RuntimeInfo(
    version="0.3.36",
    system_info="CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1",
    backends=(Backend(name="CPU", devices=("CPU: Intel(R) Xeon(R) Platinum 8480+",)),),
    gpu_offload=False,
)


def _cpuinfo(tmp_path: Path) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(XEON_CPUINFO)
    return path


def test_report_json_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_probes(monkeypatch, [NVIDIA, RAM], CPU_RUNTIME)
    config = config_mod.from_env()
    doc = system_mod.system(config, cpuinfo=_cpuinfo(tmp_path)).to_json()
    json.dumps(doc)  # plain JSON types only
    assert set(doc) == {"modelctl", "runtime", "devices", "cpu", "cpu_buffers", "store", "gpu_notice"}
    assert doc["runtime"] == {
        "version": "0.3.36",
        "system_info": CPU_RUNTIME.system_info,
        "backends": [{"name": "CPU", "devices": ["CPU: Intel(R) Xeon(R) Platinum 8480+"]}],
        "gpu_offload": False,
        "error": None,
    }
    assert [d["kind"] for d in doc["devices"]] == ["cuda", "cpu"]
    assert doc["devices"][0] == {
        "name": NVIDIA.name,
        "kind": "cuda",
        "index": 0,
        "total_bytes": 80 << 30,
        "free_bytes": 79 << 30,
    }
    assert doc["cpu"]["model"] == "Intel(R) Xeon(R) Platinum 8480+" and doc["cpu"]["amx"] is True
    assert doc["cpu_buffers"] == {"setting": "auto", "choice": "auto: CPU_REPACK", "amx": False, "repack": True}
    assert doc["store"]["models"] == 0 and doc["store"]["home"] == str(config.home)
    assert not config.store_dir.exists()  # reporting does not create the store
    assert doc["gpu_notice"] is not None and "-DGGML_CUDA=on" in doc["gpu_notice"]


def test_cpu_buffers_setting_all_takes_amx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_probes(monkeypatch, [RAM], CPU_RUNTIME)
    monkeypatch.setenv("MODELCTL_CPU_BUFFERS", "all")
    report = system_mod.system(config_mod.from_env(), cpuinfo=_cpuinfo(tmp_path))
    assert report.buffers.choice == "all: AMX + CPU_REPACK" and report.buffers.amx
    assert report.notice is None


def _invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["modelctl", *args])
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


def test_cli_plain_output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_probes(monkeypatch, [NVIDIA, RAM], CPU_RUNTIME)
    code, out = _invoke(capsys, monkeypatch, "system")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["modelctl", "0.1.0"]
    assert any(line.startswith("llama-cpp-python") and line.endswith("0.3.36") for line in lines)
    assert any(line.startswith("llama.cpp") and "CPU : SSE3 = 1" in line for line in lines)
    assert any(line.startswith("backends") and "CPU (CPU: Intel(R) Xeon(R) Platinum 8480+)" in line for line in lines)
    assert any(line.startswith("gpu offload") and "no (CPU-only build)" in line for line in lines)
    assert any(line.startswith("cpu buffers") and "MODELCTL_CPU_BUFFERS=" in line for line in lines)
    assert any(line.startswith("DEVICE") and "TOTAL" in line for line in lines)
    assert any(line.startswith(NVIDIA.name) and "80.00 GiB" in line for line in lines)
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 1 and 'CMAKE_ARGS="-DGGML_CUDA=on"' in notes[0]


def test_cli_json_output_and_runtime_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    broken = RuntimeInfo(version=None, error="llama_cpp cannot be imported: No module named 'llama_cpp'")
    _fake_probes(monkeypatch, [RAM], broken)
    code, out = _invoke(capsys, monkeypatch, "system", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["runtime"]["error"].startswith("llama_cpp cannot be imported")
    assert doc["runtime"]["backends"] == [] and doc["gpu_notice"] is None
    code, out = _invoke(capsys, monkeypatch, "system")
    assert code == 0 and "runtime error" in out and "not installed" in out


def test_readme_contract_lists_system() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    contract = readme.split("## CLI contract", 1)[1].split("```", 2)[1]
    line = next(x for x in contract.splitlines() if x.startswith("modelctl system"))
    assert "[--json]" in line
