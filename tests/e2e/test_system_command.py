"""``modelctl system`` as a real process on this machine: what it reports must match the runtime and the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "modelctl"
"""The installed entry point (``.venv/bin/modelctl``), next to the interpreter running the tests."""

Runner = Callable[..., subprocess.CompletedProcess[str]]


def _system(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else [sys.executable, "-m", "modelctl"]
    return subprocess.run(
        [*argv, "system", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),  # the autouse fixture's MODELCTL_HOME = tmp_path/home
        timeout=120,
        cwd=ROOT,
    )


def _json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = _system("--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _cpu_flags() -> set[str]:
    from modelctl import cpu

    return set(cpu.features().flags)


def test_reports_the_real_runtime() -> None:
    import llama_cpp

    doc = _json()
    runtime = doc["runtime"]
    assert runtime["error"] is None
    assert runtime["version"] == llama_cpp.__version__
    assert "CPU :" in runtime["system_info"]
    assert "CPU" in [b["name"] for b in runtime["backends"]]
    assert runtime["gpu_offload"] == bool(llama_cpp.llama_supports_gpu_offload())


def test_reports_ram_cpu_and_an_empty_store(tmp_path: Path) -> None:
    doc = _json()
    ram = [d for d in doc["devices"] if d["kind"] == "cpu"]
    assert len(ram) == 1 and ram[0]["total_bytes"] > 0 and 0 <= ram[0]["free_bytes"] <= ram[0]["total_bytes"]
    assert doc["cpu"]["model"] and doc["cpu"]["count"] >= 1
    assert doc["store"]["home"] == str(tmp_path / "home")
    assert doc["store"]["models"] == 0 and doc["store"]["free_bytes"] > 0
    assert not (tmp_path / "home").exists()  # reporting creates nothing


def test_cpu_buffer_choice_is_auto_and_never_amx() -> None:
    buffers = _json()["cpu_buffers"]
    assert buffers["setting"] == "auto" and buffers["choice"].startswith("auto: ")
    assert buffers["amx"] is False and "AMX" not in buffers["choice"]
    if "amx_int8" in _cpu_flags():  # an AMX Xeon: auto must keep llama.cpp's AMX path off (llama.cpp issue 20824)
        assert _json()["cpu"]["amx"] is True


@pytest.mark.parametrize("setting", ["all", "none"])
def test_cpu_buffer_setting_is_reported(setting: str) -> None:
    env = {**os.environ, "MODELCTL_CPU_BUFFERS": setting}
    buffers = _json(env=env)["cpu_buffers"]
    assert buffers["setting"] == setting and buffers["choice"].startswith(f"{setting}: ")
    if setting == "none":
        assert buffers["choice"] == "none: mmapped weights only"
    elif "amx_int8" in _cpu_flags() and "amx_tile" in _cpu_flags():
        assert "AMX" in buffers["choice"]


def test_gpu_notice_matches_the_machine() -> None:
    doc = _json()
    has_gpu = any(d["kind"] != "cpu" for d in doc["devices"])
    if has_gpu and not doc["runtime"]["gpu_offload"]:
        assert doc["gpu_notice"] and f'"llama-cpp-python=={doc["runtime"]["version"]}"' in doc["gpu_notice"]
    else:
        assert doc["gpu_notice"] is None


def test_plain_output() -> None:
    result = _system()
    assert result.returncode == 0, result.stderr
    keys = [line.split("   ")[0].strip() for line in result.stdout.splitlines() if line.strip()]
    for key in ("modelctl", "llama-cpp-python", "llama.cpp", "backends", "gpu offload", "cpu", "cpu buffers", "store"):
        assert key in keys
    assert "CPU :" in result.stdout and "CPU RAM" in result.stdout


def test_counts_the_models_in_the_store(modelctl: Runner) -> None:
    result = modelctl("system", "--json")
    assert result.returncode == 0, result.stderr
    store = json.loads(result.stdout)["store"]
    assert store["models"] == 1 and store["store_bytes"] > 90 << 20
