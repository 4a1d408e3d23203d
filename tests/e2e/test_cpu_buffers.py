"""The extra CPU weight buffers a real `modelctl run` loads with, read from llama.cpp's own log (``--debug``).

A Q4_0 copy of SmolLM2 (made by llama.cpp's quantiser) has matrices CPU_REPACK takes on x86 with AVX2 and ARM with
dot product. By default (``auto``) the load must keep CPU_REPACK and never use AMX (it crashes llama.cpp on some
Xeons), on every CPU kind; ``none`` uses the mmapped file only; and ``modelctl fit`` must predict exactly the
weight buffers llama.cpp reports for the same setting.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelctl import cpu
from modelctl.store import Layout

REF = "ai/smollm2:135M-Q4_0"
ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size\s*=\s*([\d.]+) MiB")
MIB = 1 << 20

QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
p.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


@pytest.fixture(scope="module")
def q4_0_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} is missing: run make setup")
    from e2e.conftest import write_model  # tests/ is on sys.path

    home = tmp_path_factory.mktemp("modelctl-q4_0")
    gguf = home / "SmolLM2-135M-Instruct-Q4_0.gguf"
    subprocess.run([sys.executable, "-c", QUANTIZE, str(SMOLLM2), str(gguf)], check=True, capture_output=True)
    write_model(Layout(home / "store"), gguf, f"docker.io/{REF}")
    return home


def _load_buffers(env: dict[str, str], setting: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "modelctl", "--debug", "run", REF, "Hi", "--max-tokens", "4", "--ctx-size", "512"],
        env={**env, "MODELCTL_CPU_BUFFERS": setting},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "no answer"
    return {name: float(size) for name, size in BUFFER.findall(result.stderr)}


def _fit_weights(env: dict[str, str], setting: str) -> float:
    result = subprocess.run(
        [sys.executable, "-m", "modelctl", "fit", REF, "--ctx-size", "512", "--json"],
        env={**env, "MODELCTL_CPU_BUFFERS": setting},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    weights: int = json.loads(result.stdout)["memory"]["weights"]
    return weights / MIB


def _clean(home: Path) -> dict[str, str]:
    from e2e.conftest import clean_env

    env: dict[str, str] = clean_env(home)
    return env


def test_the_default_keeps_cpu_repack_and_never_uses_amx(q4_0_home: Path) -> None:
    here = cpu.features()
    if not cpu.repack_types(here):
        pytest.skip(f"this CPU ({here.machine}) has no CPU_REPACK kernels (needs AVX2 or ARM dot product)")
    env = _clean(q4_0_home)
    buffers = _load_buffers(env, "auto")
    assert "AMX" not in buffers, buffers
    assert buffers.get("CPU_REPACK", 0) > 50, buffers  # the Q4_0 block matrices, ~56 MiB
    assert _fit_weights(env, "auto") == pytest.approx(sum(buffers.values()), abs=0.1)


def test_none_uses_the_mapped_file_only(q4_0_home: Path) -> None:
    env = _clean(q4_0_home)
    buffers = _load_buffers(env, "none")
    assert set(buffers) == {"CPU_Mapped"}, buffers
    assert _fit_weights(env, "none") == pytest.approx(buffers["CPU_Mapped"], abs=0.1)


def test_the_amx_choice_is_visible_before_any_load() -> None:
    """What `auto` decides on this CPU, from /proc/cpuinfo: AMX CPUs get tensor overrides, the others llama.cpp's
    own extra buffers (which have no AMX there)."""
    here = cpu.features()
    choice = cpu.weight_buffers("auto", here)
    assert not choice.amx
    assert choice.use_extra_bufts is not here.has_amx
    assert choice.repack_by_override is (here.has_amx and bool(choice.repack))
