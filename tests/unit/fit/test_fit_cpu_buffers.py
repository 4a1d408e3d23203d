"""The weights the fit check counts under each MODELCTL_CPU_BUFFERS setting, on CPUs described by llama.cpp's own
feature line: an AMX Xeon and an AVX2-only EPYC, so that any CI machine tests the AMX accounting."""

from __future__ import annotations

import pytest
from test_fit_estimate import F16, Q4_0, Q8_0, data_bytes, header

from modelctl import cpu
from modelctl.fit.estimate import estimate
from modelctl.fit.settings import RunSettings
from modelctl.gguf import GGUFHeader, TensorInfo

XEON = cpu.from_llama_line(
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1"
)
EPYC = cpu.from_llama_line(
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | REPACK = 1"
)
Q4_K = 12
S = RunSettings(n_ctx=512)


def weights(h: GGUFHeader, setting: str, machine: cpu.CpuFeatures) -> int:
    return estimate(h, S, buffers=cpu.weight_buffers(setting, machine)).weights


def matrices(h: GGUFHeader) -> list[TensorInfo]:
    return [t for t in h.tensors if len(t.shape) == 2 and not t.name.startswith("token_embd")]


def span(h: GGUFHeader, copied: list[TensorInfo]) -> int:
    """The mmapped buffer: the file range of the tensors that stay in the file."""
    names = {t.name for t in copied}
    kept = [t for t in h.tensors if t.name not in names]
    return max(t.offset + t.n_bytes for t in kept) - min(t.offset for t in kept)


def aligned(n: int) -> int:
    return -(-n // 32) * 32


def test_q4_0_tied_per_setting_on_an_amx_xeon() -> None:
    """benchmarks' llama-q4_0 shape: AMX and CPU_REPACK copy every matrix; auto leaves the tied output's copy of
    token_embd in the file (tensor overrides match names), llama.cpp's own choice copies it too."""
    h = header(n_layer=3, n_embd=256, n_head=4, n_head_kv=2, n_ff=768, n_vocab=8192, wtype=Q4_0, tied=True)
    mats = matrices(h)
    embd = h.tensor("token_embd.weight")
    assert embd is not None
    mapped = span(h, mats)
    copies = sum(aligned(t.n_bytes) for t in mats)  # Q4_0 in AMX: the file's bytes
    assert weights(h, "none", XEON) == data_bytes(h)
    assert weights(h, "auto", XEON) == mapped + copies
    assert weights(h, "all", XEON) == mapped + copies + aligned(embd.n_bytes)
    # an EPYC has no AMX: all == auto == llama.cpp's own CPU_REPACK, which repacks the tied copy too
    assert weights(h, "all", EPYC) == weights(h, "auto", EPYC) == mapped + copies + aligned(embd.n_bytes)


def test_amx_copies_have_llama_cpp_s_packed_size() -> None:
    h = header(n_layer=2, n_embd=512, n_head=8, n_head_kv=8, n_ff=1536, n_vocab=4096, wtype=Q8_0)
    mats = matrices(h)
    packed = sum(aligned(t.shape[1] * (t.shape[0] // 32) * (34 + 4)) for t in mats)  # + an int32 per block
    assert weights(h, "all", XEON) == span(h, mats) + packed
    assert weights(h, "auto", XEON) == weights(h, "none", XEON) == data_bytes(h)  # x86 repacks no Q8_0


def test_amx_falls_back_to_repack_for_rows_it_cannot_take() -> None:
    """Rows not a multiple of 32 skip AMX; Q4_0 rows a multiple of 8 still go to CPU_REPACK under all."""
    h = header(n_layer=1, n_embd=256, n_head=4, n_head_kv=2, n_ff=520, n_vocab=1024, wtype=Q4_0)
    odd = [t for t in h.tensors if t.name in ("blk.0.ffn_gate.weight", "blk.0.ffn_up.weight")]  # 520 rows
    assert odd and not any(cpu.amx_eligible(Q4_0, t.shape) for t in odd)
    assert all(cpu.repackable(Q4_0, t.shape, cpu.repack_types(XEON)) for t in odd)
    mats = matrices(h)
    # every matrix gets a copy of its own size, whichever buffer takes it
    assert weights(h, "all", XEON) == weights(h, "auto", EPYC) == span(h, mats) + sum(aligned(t.n_bytes) for t in mats)


def test_f16_goes_to_amx_unpacked() -> None:
    h = header(n_layer=2, n_embd=256, n_head=8, n_head_kv=2, n_ff=688, n_vocab=1024, wtype=F16)
    taken = [t for t in matrices(h) if cpu.amx_eligible(F16, t.shape)]
    assert {t.name.split(".")[-2] for t in taken} >= {"attn_q", "attn_k", "attn_output", "ffn_down", "output"}
    assert not any(t.name.endswith(("ffn_gate.weight", "ffn_up.weight")) for t in taken)  # 688 rows: % 32 != 0
    assert weights(h, "all", XEON) == span(h, taken) + sum(aligned(t.n_bytes) for t in taken)
    assert weights(h, "auto", XEON) == weights(h, "none", XEON) == data_bytes(h)


@pytest.mark.parametrize("setting", ["auto", "all", "none"])
def test_settings_choose_the_buffers(setting: str) -> None:
    h = header(n_layer=2, n_embd=512, n_head=8, n_head_kv=4, n_ff=1536, wtype=Q4_K)
    via_settings = estimate(h, RunSettings(n_ctx=512, cpu_buffers=setting)).weights
    assert via_settings == estimate(h, S, buffers=cpu.weight_buffers(setting, cpu.features())).weights


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CPU buffer setting"):
        RunSettings(cpu_buffers="amx")
