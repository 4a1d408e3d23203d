"""modelctl.cpu: the CPU's features, what CPU_REPACK and AMX take, and the buffers each setting uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl import cpu

XEON_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1"
)
EPYC = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | REPACK = 1"


@pytest.mark.parametrize(
    ("machine", "flags", "has_q4_0"),
    [
        ("x86_64", "fpu sse2 avx avx2 fma", True),
        ("x86_64", "fpu sse2 avx avx2 avx512f", True),
        ("x86_64", "fpu sse2 avx", False),
        ("aarch64", "fp asimd asimddp", True),
        ("aarch64", "fp asimd", False),
        ("riscv64", "", False),
    ],
)
def test_repack_types_follow_the_cpu(tmp_path: Path, machine: str, flags: str, has_q4_0: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    key = "Features" if machine == "aarch64" else "flags"
    cpuinfo.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n")
    types_ = cpu.repack_types(cpu.features(cpuinfo, machine, "linux"))
    assert (2 in types_) is has_q4_0
    assert (10 in types_) is ("avx512f" in flags)  # Q2_K needs AVX-512


def test_llama_line_features() -> None:
    xeon, epyc = cpu.from_llama_line(XEON_AMX), cpu.from_llama_line(EPYC)
    assert xeon.has_amx and not epyc.has_amx
    assert 10 in cpu.repack_types(xeon) and 10 not in cpu.repack_types(epyc)


def test_weight_buffers_per_setting() -> None:
    xeon, epyc = cpu.from_llama_line(XEON_AMX), cpu.from_llama_line(EPYC)
    auto = cpu.weight_buffers("auto", xeon)
    assert not auto.amx and auto.repack and auto.repack_by_override and not auto.use_extra_bufts
    every = cpu.weight_buffers("all", xeon)
    assert every.amx and every.repack and every.use_extra_bufts and not every.repack_by_override
    assert cpu.weight_buffers("all", epyc) == cpu.WeightBuffers(setting="all", repack=cpu.repack_types(epyc))
    none = cpu.weight_buffers("none", xeon)
    assert not none.amx and not none.repack and not none.use_extra_bufts
    with pytest.raises(ValueError, match="unknown CPU buffer setting"):
        cpu.weight_buffers("amx", xeon)


@pytest.mark.parametrize(
    ("ggml_type", "shape", "eligible", "size"),
    [
        (2, (576, 1536), True, 1536 * 18 * 18),  # Q4_0: the file's bytes
        (3, (576, 1536), True, 1536 * 18 * 20),  # Q4_1
        (8, (576, 192), True, 192 * 18 * (34 + 4)),  # Q8_0: + an int32 compensation per block
        (12, (512, 1536), True, 1536 * 2 * (144 + 4)),  # Q4_K: + unpacked scales
        (14, (512, 256), True, 256 * 2 * 210),  # Q6_K
        (1, (256, 64), True, 256 * 64 * 2),  # F16: kept unpacked
        (2, (576, 200), False, 0),  # rows not a multiple of 32
        (12, (576, 512), False, 0),  # a row length not a multiple of 256
        (0, (256, 256), False, 0),  # F32: no AMX kernel
        (20, (256, 256), False, 0),  # IQ4_NL: no AMX kernel
    ],
)
def test_amx_rules(ggml_type: int, shape: tuple[int, ...], eligible: bool, size: int) -> None:
    assert cpu.amx_eligible(ggml_type, shape) is eligible
    if eligible:
        assert cpu.amx_bytes(ggml_type, shape) == size
    assert not cpu.takes_amx("token_embd.weight", ggml_type, shape)  # a row lookup, not a product
