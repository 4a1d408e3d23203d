"""The host CPU as llama.cpp's CPU backend sees it, and which extra weight buffers a load may use on it.

llama.cpp can keep a second, re-laid-out copy of some weight matrices next to the mmapped file, in an *extra
buffer type*: ``AMX`` (Intel Sapphire Rapids and later) and ``CPU_REPACK`` (AVX2 / AVX-512 / ARM dot-product
kernels). Both cost RAM on top of the file, so the fit check must know which ones a load uses, and the AMX one
crashes llama.cpp on some Xeons (llama.cpp issue 20824: a segfault in ``ggml_backend_amx_mul_mat`` on the first
batched evaluation). This module decides, from the CPU's flags and the ``MODELCTL_CPU_BUFFERS`` setting, what a
load uses; the runtime applies the decision and the fit check counts it, so both describe the same load.

Settings:

- ``auto`` (default): ``CPU_REPACK`` where the CPU has its kernels, never ``AMX``;
- ``all``: llama.cpp's own default, ``AMX`` first where the CPU (and the build) has it, then ``CPU_REPACK``;
- ``none``: no extra buffer: weights are used from the mmapped file only (the least RAM, slower prompts).
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

CPU_BUFFERS = ("auto", "all", "none")
"""The values of ``MODELCTL_CPU_BUFFERS``."""

# ggml type id -> rows multiple that the CPU backend repacks
REPACK_AVX2: dict[int, int] = {2: 8, 12: 8, 20: 8, 39: 8}  # Q4_0, Q4_K, IQ4_NL, MXFP4
REPACK_AVX512: dict[int, int] = {**REPACK_AVX2, 10: 8}  # + Q2_K
REPACK_ARM_DOTPROD: dict[int, int] = {2: 4, 12: 8, 13: 8, 14: 8, 20: 4, 39: 4, 8: 4}  # + Q5_K, Q6_K, Q8_0

AMX_TYPES: frozenset[int] = frozenset({2, 3, 8, 12, 13, 14, 23})
"""ggml types llama.cpp's AMX buffer takes (``qtype_has_amx_kernels``): Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS."""


MUL_MAT_EXCLUDED = ("token_embd.", "token_types.", "position_embd.", "per_layer_token_embd.")
"""Weights read by row lookups, not matrix products: no extra buffer takes them (a tied output's copy of
``token_embd`` is a matrix product, but it shares the name, so tensor overrides cannot single it out)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuFeatures:
    """What the CPU offers: its flags (``/proc/cpuinfo``) and architecture."""

    flags: frozenset[str] = frozenset()
    machine: str = ""
    system: str = ""

    @property
    def arch(self) -> str:
        machine = self.machine.lower()
        if machine in ("arm64", "aarch64"):
            return "arm64"
        if machine in ("x86_64", "amd64"):
            return "x86_64"
        return machine

    @property
    def has_amx(self) -> bool:
        """Intel AMX with int8 tiles: what llama.cpp's AMX buffer type needs."""
        return self.arch == "x86_64" and {"amx_int8", "amx_tile"} <= self.flags


def features(
    cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None, system: str | None = None
) -> CpuFeatures:
    """This machine's CPU features (``cpuinfo`` and ``machine`` can be replaced by tests)."""
    return CpuFeatures(
        flags=frozenset(_cpu_flags(cpuinfo)),
        machine=machine or platform.machine(),
        system=system or sys.platform,
    )


def from_llama_line(line: str, machine: str = "x86_64") -> CpuFeatures:
    """Features from llama.cpp's system-info line (``CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | ...``)."""
    flags: set[str] = set()
    for item in line.replace("|", "\n").splitlines():
        name, _, value = item.rpartition("=")
        name = name.split(":")[-1].strip().lower()
        if value.strip() == "1" and name:
            flags.add(name)
    if "amx_int8" in flags:
        flags.add("amx_tile")
    if "avx512" in flags:
        flags.add("avx512f")
    if "dotprod" in flags:
        flags.add("asimddp")
    return CpuFeatures(flags=frozenset(flags), machine=machine, system="linux")


def repack_types(cpu: CpuFeatures) -> dict[int, int]:
    """ggml types the CPU backend copies into its repacked layout -> the row multiple it needs."""
    if cpu.arch == "arm64":
        if cpu.system == "darwin" or "asimddp" in cpu.flags:
            return dict(REPACK_ARM_DOTPROD)
        return {}
    if cpu.arch == "x86_64":
        if "avx512f" in cpu.flags:
            return dict(REPACK_AVX512)
        return dict(REPACK_AVX2) if "avx2" in cpu.flags else {}
    return {}


EXPERT_TENSORS = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")
"""A MoE layer's expert tensors (llama.cpp's ``LLM_FFN_EXPS_REGEX``): what ``--n-cpu-moe`` keeps in host memory.
The fit check counts them on the host and the runtime asks llama.cpp to put them there, by this one rule."""


def uses_mul_mat(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp uses this weight in a matrix product (the only op the extra buffers serve)."""
    return len(shape) >= 2 and shape[1] > 1 and not name.startswith(MUL_MAT_EXCLUDED)


def repackable(ggml_type: int, shape: tuple[int, ...], repack: dict[int, int]) -> bool:
    """Whether CPU_REPACK can take a matrix of this type and shape (``ggml_repack_get_optimal_repack_type``)."""
    rows = repack.get(ggml_type)
    return rows is not None and len(shape) in (2, 3) and shape[1] % rows == 0


def takes_repack(name: str, ggml_type: int, shape: tuple[int, ...], repack: dict[int, int]) -> bool:
    """Whether a named weight of the file gets a CPU_REPACK copy."""
    return uses_mul_mat(name, shape) and repackable(ggml_type, shape, repack)


# AMX: ggml type -> (elements per block, bytes per block, extra bytes per block in the packed layout, K multiple)
_AMX_LAYOUT: dict[int, tuple[int, int, int, int]] = {
    2: (32, 18, 0, 32),  # Q4_0
    3: (32, 20, 0, 32),  # Q4_1
    8: (32, 34, 4, 32),  # Q8_0: an int32 compensation per block (s8s8 igemm)
    12: (256, 144, 4, 256),  # Q4_K: unpacked scales
    13: (256, 176, 4, 256),  # Q5_K
    14: (256, 210, 0, 256),  # Q6_K
    23: (256, 136, 2, 256),  # IQ4_XS
    1: (1, 2, 0, 16),  # F16: taken as is (no packing)
}
AMX_TILE_N = 16


def amx_eligible(ggml_type: int, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp's AMX buffer takes a matrix used in a product (``supports_op`` of its extra buffer type:
    rows a multiple of ``2 * TILE_N``, a row length the type's kernel handles; F16 as well, kept unpacked)."""
    layout = _AMX_LAYOUT.get(ggml_type)
    if layout is None or len(shape) < 2:
        return False
    return shape[1] % (2 * AMX_TILE_N) == 0 and shape[0] % layout[3] == 0


def amx_bytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes the AMX buffer allocates for an eligible matrix (``ggml_backend_amx_get_alloc_size``, before the
    buffer's 32-byte alignment): ``ne1`` rows of the packed row size for AMX_TYPES, the plain size for F16."""
    block, size, extra, _ = _AMX_LAYOUT[ggml_type]
    if ggml_type not in AMX_TYPES:
        n = 1
        for d in shape:
            n *= d
        return n // block * size
    return shape[1] * (shape[0] // block) * (size + extra)


def takes_amx(name: str, ggml_type: int, shape: tuple[int, ...]) -> bool:
    """Whether a named weight of the file gets an AMX copy (when the load uses AMX)."""
    return uses_mul_mat(name, shape) and amx_eligible(ggml_type, shape)


@dataclass(frozen=True, kw_only=True, slots=True)
class WeightBuffers:
    """Which extra weight buffers a load uses, and how the runtime asks llama.cpp for exactly those."""

    setting: str = "auto"
    amx: bool = False
    """Whether AMX copies are made (AMX_TYPES matrices, before any repacking)."""
    repack: dict[int, int] = field(default_factory=dict)
    """ggml types that get a CPU_REPACK copy -> the row multiple they need."""
    use_extra_bufts: bool = True
    """llama.cpp's own switch (``llama_model_params.use_extra_bufts``): all extra buffer types, AMX included."""
    repack_by_override: bool = False
    """With the switch off, place the repackable matrices in CPU_REPACK by tensor overrides (AMX CPUs in ``auto``)."""

    def describe(self) -> str:
        """One line for ``modelctl system`` and crash reports."""
        kinds = (["AMX"] if self.amx else []) + (["CPU_REPACK"] if self.repack else [])
        return f"{self.setting}: " + (" + ".join(kinds) if kinds else "mmapped weights only")


def weight_buffers(setting: str, cpu: CpuFeatures) -> WeightBuffers:
    """The extra weight buffers a load uses under ``setting`` on ``cpu``."""
    if setting not in CPU_BUFFERS:
        raise ValueError(f"unknown CPU buffer setting {setting!r} (use {', '.join(CPU_BUFFERS)})")
    if setting == "none":
        return WeightBuffers(setting=setting, use_extra_bufts=False)
    repack = repack_types(cpu)
    if setting == "all" or not cpu.has_amx:
        return WeightBuffers(setting=setting, amx=setting == "all" and cpu.has_amx, repack=repack)
    # auto on an AMX CPU: llama.cpp would put AMX first; turn the extra types off and ask for CPU_REPACK by name
    return WeightBuffers(setting=setting, repack=repack, use_extra_bufts=False, repack_by_override=bool(repack))


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()
