"""Fit accuracy: the fit check's prediction against the buffer sizes llama.cpp itself prints when it loads a model.

For SmolLM2-135M and a set of small generated GGUFs (GQA and MHA llama, tied embeddings with a 128K vocabulary,
gemma2's sliding-window layers, OpenELM's per-layer head counts, F16 / Q8_0 / Q4_K / Q4_0 weights), each at several
contexts and cache types, the model is loaded by llama-cpp-python in a subprocess with ``verbose=True`` and the
settings ``modelctl run`` uses (:class:`modelctl.fit.settings.RunSettings`), and its ``model``, ``KV``, ``output``
and ``compute buffer size`` lines are compared with :func:`modelctl.fit.estimate.estimate`. The load happens inside
:func:`modelctl.runtime.buffers.applied`, with the extra CPU weight buffers of the case (``MODELCTL_CPU_BUFFERS``:
``auto`` unless the case says ``all`` or ``none``), exactly as ``modelctl run`` loads. ``all`` (llama.cpp's AMX
buffer) rows run only on CPUs with AMX: loading works there and prints every buffer (only evaluation crashes).

Targets (issue 5): weights, KV cache and output within 0.1 MiB; compute within +15% / -0%; total never under.

    .venv/bin/python benchmarks/fit_accuracy.py            # the full table (Markdown) on stdout
    .venv/bin/python benchmarks/fit_accuracy.py --quick    # SmolLM2 at two contexts and two generated shapes
    .venv/bin/python benchmarks/fit_accuracy.py --gpu-logs tests/fixtures/gpu_logs [--json]   # published GPU logs
    .venv/bin/python benchmarks/fit_accuracy.py --shape deepseek-v3-mla   # one shape, its rows updated in place
    .venv/bin/python benchmarks/fit_accuracy.py --mla-grid   # the MLA loads tests/unit/fit/test_fit_mla.py pins
    .venv/bin/python benchmarks/fit_accuracy.py --moe-grid   # the MoE loads tests/unit/fit/test_fit_moe_compute.py pins

The MLA shapes (deepseek2's latent attention at DeepSeek-V3, Kimi-K2 and V2 widths) are sparse files of zero
weights: tens of GB long, a few MB on disk, mapped but never read. So are the MoE shapes (qwen3moe at
Qwen3-30B-A3B and -235B-A22B widths, Mixtral's as llama with experts), each under 3.2 GiB mapped.

It writes the table to docs/fit_accuracy.md as well, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # modelctl when run as a script
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:  # gpu_logs beside this file; last, so that nothing here
    sys.path.append(str(Path(__file__).resolve().parent))  # shadows a package when a test imports this module

from modelctl import cpu  # noqa: E402
from modelctl.fit.estimate import Estimate, estimate  # noqa: E402
from modelctl.fit.settings import RunSettings  # noqa: E402
from modelctl.gguf import FileSource, read_header  # noqa: E402

SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
MIB = 1 << 20
EXACT_MIB = 0.1
COMPUTE_OVER = 0.15


@dataclass(frozen=True, kw_only=True)
class MLA:
    """Multi-head latent attention (deepseek2): the query and latent ranks and the per-head lengths."""

    q_lora: int = 1536
    kv_lora: int = 512
    rope: int = 64
    nope: int = 128
    v_head: int = 128
    split: bool = True
    """The split K/V matrices of files converted since llama.cpp's MLA cache (April 2025); False: an older file
    with one joint ``attn_kv_b``, which llama.cpp still loads with a per-head K and V cache."""


@dataclass(frozen=True, kw_only=True)
class Shape:
    """A generated model: llama.cpp's hyper-parameters and the type of its large weights."""

    name: str
    arch: str = "llama"
    n_layer: int = 4
    n_embd: int = 256
    n_head: int | tuple[int, ...] = 8
    n_head_kv: int | tuple[int, ...] = 2
    n_ff: int | tuple[int, ...] = 512
    head_dim: int | None = None
    n_vocab: int = 8192
    weights: str = "F16"
    tied: bool = False
    n_swa: int = 0
    ctx_train: int = 8192
    held_out: bool = False
    """Not used to calibrate the compute formula: a check that it generalises."""
    mla: MLA | None = None
    """deepseek2's latent attention (``arch`` deepseek2): the cache holds one latent K per layer."""
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_expert_shared: int = 0
    dense_lead: int = 0
    """Layers before the first MoE layer (dense feed-forward of ``n_ff``)."""
    sparse: bool = False
    """Zero weights left as a hole in the file: a model of real width whose bytes are never written (the
    compute buffer depends on the shape only)."""
    cases: tuple[tuple[int, str], ...] = ()
    """(n_ctx, cache type) pairs for this shape instead of :data:`CASES` (wide models: scores of 128 heads over
    16K cells without flash attention would be a 4 GiB buffer)."""


SHAPES: tuple[Shape, ...] = (
    Shape(name="llama-gqa-f16", n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=688, weights="F16"),
    Shape(name="llama-mha-q8_0", n_layer=3, n_embd=384, n_head=6, n_head_kv=6, n_ff=1024, weights="Q8_0"),
    Shape(
        name="llama-mha-tied-f16",
        n_layer=3,
        n_embd=256,
        n_head=4,
        n_head_kv=4,
        n_ff=640,
        n_vocab=32000,
        weights="F16",
        tied=True,
    ),
    Shape(
        name="llama-tied-128k-q8_0",
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_head_kv=1,
        n_ff=256,
        n_vocab=128256,
        weights="Q8_0",
        tied=True,
    ),
    Shape(name="llama-q4_k", n_layer=4, n_embd=512, n_head=8, n_head_kv=4, n_ff=1536, weights="Q4_K"),
    Shape(name="llama-q4_0", n_layer=3, n_embd=256, n_head=4, n_head_kv=2, n_ff=768, weights="Q4_0", tied=True),
    Shape(
        name="gemma2-swa-f16",
        arch="gemma2",
        n_layer=4,
        n_embd=256,
        n_head=4,
        n_head_kv=2,
        n_ff=512,
        head_dim=64,
        n_vocab=16384,
        n_swa=512,
        tied=True,
    ),
    Shape(
        name="openelm-per-layer-heads",
        arch="openelm",
        n_layer=4,
        n_embd=256,
        n_head=(4, 4, 6, 8),
        n_head_kv=(1, 2, 2, 4),
        n_ff=(512, 640, 768, 1024),
        head_dim=64,
        n_vocab=8192,
        tied=True,
    ),
    Shape(
        # issue 11: a feed-forward length 32x the embedding width (the compute buffer was predicted 28% over)
        name="llama-ffn32-q8_0",
        n_layer=2,
        n_embd=512,
        n_head=8,
        n_head_kv=8,
        n_ff=16384,
        weights="Q8_0",
    ),
    Shape(
        name="llama-ffn16-gqa-q8_0",
        n_layer=2,
        n_embd=512,
        n_head=8,
        n_head_kv=4,
        n_ff=8192,
        weights="Q8_0",
    ),
    Shape(
        name="llama-1024-q8_0",
        n_layer=3,
        n_embd=1024,
        n_head=16,
        n_head_kv=4,
        n_ff=2816,
        n_vocab=32000,
        weights="Q8_0",
        held_out=True,
    ),
    Shape(
        name="llama-small-vocab-f16",
        n_layer=8,
        n_embd=512,
        n_head=8,
        n_head_kv=8,
        n_ff=1408,
        n_vocab=2048,
        held_out=True,
    ),
    Shape(
        name="llama-ffn20-q4_k",
        n_layer=2,
        n_embd=768,
        n_head=12,
        n_head_kv=4,
        n_ff=15360,
        weights="Q4_K",
        held_out=True,
    ),
)

MLA_CASES: tuple[tuple[int, str], ...] = ((512, "f16"), (4096, "f16"), (4096, "q8_0"), (16384, "q8_0"), (8192, "q4_0"))
"""The MLA shapes' cases: without flash attention (f16) up to 4K, with it (quantised caches) up to 16K."""
V3 = {
    # DeepSeek-V3's widths (also R1's): two layers, the first dense, the second MoE, as the real model's layers 2
    # and 3; a small vocabulary (the logits step is not what these shapes test); zero weights in a sparse file
    "arch": "deepseek2",
    "n_layer": 2,
    "n_embd": 7168,
    "n_head": 128,
    "n_head_kv": 1,
    "n_ff": 18432,
    "n_vocab": 2048,
    "mla": MLA(),
    "n_expert": 256,
    "n_expert_used": 8,
    "n_ff_exp": 2048,
    "n_expert_shared": 1,
    "dense_lead": 1,
    "ctx_train": 163840,
    "sparse": True,
    "cases": MLA_CASES,
}
SHAPES += (
    Shape(name="deepseek-v3-mla", **V3),  # type: ignore[arg-type]
    Shape(name="kimi-k2-mla", **{**V3, "n_head": 64, "n_expert": 384}),  # type: ignore[arg-type]
    Shape(
        name="deepseek-v2-mla",
        **{  # type: ignore[arg-type]
            **V3,
            "n_embd": 5120,
            "n_ff": 12288,
            "n_expert": 160,
            "n_expert_used": 6,
            "n_ff_exp": 1536,
            "n_expert_shared": 2,
            "held_out": True,
        },
    ),
    Shape(
        name="mla-small",
        **{  # type: ignore[arg-type]
            **V3,
            "n_embd": 1024,
            "n_head": 16,
            "n_ff": 2816,
            "n_vocab": 8192,
            "mla": MLA(q_lora=384, kv_lora=256, rope=32, nope=64, v_head=64),
            "n_expert": 16,
            "n_expert_used": 4,
            "n_ff_exp": 512,
            "held_out": True,
        },
    ),
)

MOE_CASES: tuple[tuple[int, str], ...] = ((512, "f16"), (4096, "f16"), (512, "q8_0"), (4096, "q8_0"), (16384, "q8_0"))
"""The MoE shapes' cases: f16 without flash attention, q8_0 with it."""
QWEN3_A3B = Shape(
    # Qwen3-30B-A3B's widths: 128 experts of 768, 8 used per token, 32 query heads of 128 over 4 KV heads
    name="qwen3moe-a3b",
    arch="qwen3moe",
    n_layer=2,
    n_embd=2048,
    n_head=32,
    n_head_kv=4,
    head_dim=128,
    n_ff=6144,
    n_vocab=32000,
    n_expert=128,
    n_expert_used=8,
    n_ff_exp=768,
    ctx_train=40960,
    sparse=True,
    cases=MOE_CASES,
)
SHAPES += (
    QWEN3_A3B,
    # Qwen3-235B-A22B's widths: 64 query heads (a query twice the embedding), 8 experts of 1536 used; 32 experts,
    # not 128 (only the router's rows depend on the count): the mapped file stays under 3.2 GiB
    replace(
        QWEN3_A3B, name="qwen3moe-a22b", n_embd=4096, n_head=64, n_ff=12288, n_expert=32, n_ff_exp=1536, held_out=True
    ),
    Shape(
        # Mixtral-8x7B's widths as llama with experts: 8 experts of 14336, 2 used per token; Q8_0 (3.1 GiB mapped)
        name="mixtral-moe",
        weights="Q8_0",
        n_layer=2,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=32000,
        n_expert=8,
        n_expert_used=2,
        ctx_train=32768,
        sparse=True,
        cases=MOE_CASES,
    ),
)


def _moe_probe(n_embd: int, used: int, n_ff_exp: int) -> Shape:
    """A qwen3moe shape of MOE_GRID: 32 heads of 128, 32 experts, a vocabulary of 2048."""
    name, n_ff = f"e{n_embd}-u{used}-f{n_ff_exp}", n_ff_exp * used
    return replace(
        QWEN3_A3B,
        name=name,
        n_embd=n_embd,
        n_ff=n_ff,
        n_vocab=2048,
        n_expert=32,
        n_expert_used=used,
        n_ff_exp=n_ff_exp,
        cases=(),
    )


MOE_GRID: dict[str, Shape] = {
    # the qwen3moe shapes tests/unit/fit/test_fit_moe_compute.py pins (--moe-grid measures them): 1024-4096 wide,
    # 2-8 experts used of 768-3072, a small vocabulary so that the layers' steps decide
    s.name: s
    for s in (
        *(_moe_probe(e, u, f) for e in (1024, 2048, 4096) for u in (2, 8) for f in (768, 3072)),
        _moe_probe(2048, 4, 768),
        _moe_probe(4096, 4, 768),
        _moe_probe(4096, 4, 1536),
        # gate, up and SwiGLU blocks that part fit the holes the attention leaves (expert_step's best fit)
        _moe_probe(2048, 3, 768),
        _moe_probe(1024, 4, 768),
        _moe_probe(4096, 2, 1536),
    )
}
MOE_GRID_CASES: tuple[tuple[int, int, str, bool], ...] = (
    (4096, 512, "f16", True),
    (1024, 1024, "f16", True),
    (512, 512, "f16", False),
    (4096, 512, "f16", False),
)

MLA_GRID: dict[str, Shape] = {
    # the MLA shapes tests/unit/fit/test_fit_mla.py pins (--mla-grid measures them): every layer MoE (dense_lead
    # 0) or every layer dense, 16 to 128 heads, at ubatch 512 and 1024 with flash attention on and off
    name: Shape(name=name, **{**V3, "dense_lead": 0, "cases": (), **extra})  # type: ignore[arg-type]
    for name, extra in {
        "v3-moe": {},
        "v3-dense": {"dense_lead": 2},
        "v3-h16": {"n_head": 16},
        "k2-h64": {"n_head": 64, "n_expert": 384},
        "dense-h64": {"n_head": 64, "dense_lead": 2},
        "v2": {
            "n_embd": 5120,
            "n_ff": 12288,
            "n_ff_exp": 1536,
            "n_expert": 160,
            "n_expert_used": 6,
            "n_expert_shared": 2,
            "dense_lead": 1,
        },
        "small": {
            "n_embd": 1024,
            "n_head": 16,
            "n_ff": 2816,
            "n_ff_exp": 512,
            "n_expert": 16,
            "n_expert_used": 4,
            "mla": MLA(q_lora=384, kv_lora=256, rope=32, nope=64, v_head=64),
            "n_vocab": 8192,
        },
    }.items()
}
MLA_GRID_CASES: tuple[tuple[int, int, str, bool], ...] = (
    # (n_ctx, n_ubatch, cache, flash attention); 128 heads without flash attention stop at 4K (the scores of 16K
    # cells would be a 4 GiB buffer)
    (512, 512, "f16", True),
    (4096, 512, "f16", True),
    (16384, 512, "f16", True),
    (16384, 1024, "q8_0", True),
    (512, 512, "f16", False),
    (4096, 512, "f16", False),
    (1024, 1024, "f16", False),
)


HEADS_GRID: dict[str, Shape] = {
    # DeepSeek files converted before llama.cpp's MLA cache (one joint attn_kv_b; llama.cpp keeps a per-head K and
    # V cache for them): the pinned loads of tests/unit/fit/test_fit_deepseek_heads.py (--heads-grid measures them)
    name: replace(MLA_GRID[base], name=name, n_head_kv=128, mla=MLA(split=False))
    for name, base in (("v3-heads", "v3-moe"), ("v2-heads", "v2"))
}
HEADS_GRID_CASES: tuple[tuple[int, int, str, bool], ...] = (
    (4096, 512, "f16", True),
    (16384, 512, "f16", True),
    (16384, 1024, "q8_0", True),
    (1024, 256, "f16", True),
    (512, 512, "f16", False),
    (4096, 512, "f16", False),
    (1024, 1024, "f16", False),
)


FLASH_GRID: dict[str, Shape] = {
    # dense models whose flash-attention layer step outgrows the logits (a small vocabulary stands in for a server's
    # one-output reservation or a wide feed-forward): the loads tests/unit/fit/test_fit_flash_layers.py pins
    # (--flash-grid measures them); a query twice the embedding (Qwen3-0.6B's widths) and Mistral-7B's widths
    "qwen3-06b-widths": Shape(
        name="qwen3-06b-widths",
        n_layer=4,
        n_embd=1024,
        n_head=16,
        n_head_kv=8,
        head_dim=128,
        n_ff=3072,
        n_vocab=2048,
        weights="Q8_0",
    ),
    "mistral-7b-widths": Shape(
        name="mistral-7b-widths",
        n_layer=2,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=2048,
        weights="Q8_0",
    ),
}
FLASH_GRID_CASES: tuple[tuple[int, int, str, bool], ...] = (
    (4096, 512, "f16", True),
    (16384, 512, "f16", True),
    (16384, 512, "q8_0", True),
    (4096, 256, "q8_0", True),
    (4096, 1024, "f16", True),
    (16384, 512, "q4_0", True),
)


def grid_settings(n_ctx: int, n_ubatch: int, cache: str, flash: bool) -> RunSettings:
    """A grid load's settings: the batch as large as the micro-batch (llama.cpp caps n_ubatch at n_batch)."""
    flash_attn = "on" if flash else "off"
    return RunSettings(
        n_ctx=n_ctx, n_batch=max(512, n_ubatch), n_ubatch=n_ubatch, cache_type=cache, flash_attn=flash_attn
    )


def mla_grid(workdir: Path | None = None) -> list[str]:
    """Measure :data:`MLA_GRID` at :data:`MLA_GRID_CASES`: one line per load, as test_fit_mla.py's table holds
    them (shape, n_ctx, n_ubatch, cache, flash attention, llama.cpp's compute MiB)."""
    return measure_grid(MLA_GRID, MLA_GRID_CASES, workdir)


def measure_grid(
    shapes: dict[str, Shape], cases: Sequence[tuple[int, int, str, bool]], workdir: Path | None = None
) -> list[str]:
    """Measure each shape at each ``(n_ctx, n_ubatch, cache, flash attention)`` case (:func:`grid_settings`)."""
    lines = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name, shape in shapes.items():
            path = write_gguf(shape, Path(tmp) / f"{name}.gguf")
            for n_ctx, n_ubatch, cache, flash in cases:
                truth = measure(path, grid_settings(n_ctx, n_ubatch, cache, flash), n_ctx)
                lines.append(f'("{name}", {n_ctx}, {n_ubatch}, "{cache}", {flash}, {truth["compute"]:.2f}),')
                print(lines[-1], flush=True)
            path.unlink()
    return lines


# (n_ctx, cache type) pairs each shape is measured at
CASES: tuple[tuple[int, str], ...] = (
    (256, "f16"),
    (1024, "f16"),
    (4096, "f16"),
    (16384, "f16"),
    (2048, "q8_0"),
    (8192, "q4_0"),
)
# (n_ctx, cache type, MODELCTL_CPU_BUFFERS) the extra-buffer settings are measured at, per model
BUFFER_CASES: dict[str, tuple[tuple[int, str, str], ...]] = {
    "SmolLM2-135M Q4_1": ((512, "f16", "all"), (4096, "q8_0", "all"), (2048, "f16", "none")),
    "llama-q4_0": ((1024, "f16", "all"), (4096, "q8_0", "all"), (1024, "f16", "none")),
    "llama-q4_k": ((1024, "f16", "all"), (4096, "q8_0", "all"), (1024, "f16", "none")),
    "llama-gqa-f16": ((1024, "f16", "all"),),
    "llama-mha-q8_0": ((4096, "f16", "all"),),
}
Case = tuple[int, str] | tuple[int, str, str]
QUICK_SHAPES = ("llama-gqa-f16", "openelm-per-layer-heads")
QUICK_CASES: tuple[tuple[int, str], ...] = ((512, "f16"), (4096, "f16"))
SMOLLM2_CASES: tuple[tuple[int, str], ...] = (
    (256, "f16"),
    (512, "f16"),
    (2048, "f16"),
    (4096, "f16"),
    (8192, "f16"),
    (2048, "q8_0"),
    (4096, "q4_0"),
)


def _per_layer(value: int | tuple[int, ...], n: int) -> list[int]:
    return list(value) if isinstance(value, tuple) else [value] * n


def write_gguf(shape: Shape, path: Path, *, seed: int = 0) -> Path:
    """Write ``shape`` as a loadable GGUF (random weights; a byte-level vocabulary of ``n_vocab`` tokens)."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    heads = _per_layer(shape.n_head, shape.n_layer)
    kv_heads = _per_layer(shape.n_head_kv, shape.n_layer)
    ffs = _per_layer(shape.n_ff, shape.n_layer)
    head_dim = shape.head_dim or shape.n_embd // heads[0]
    qtype = gguf.GGMLQuantizationType[shape.weights]

    def weight(rows: int, cols: int) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
        if qtype == gguf.GGMLQuantizationType.Q4_K:
            # gguf-py cannot quantize to Q4_K: valid blocks by hand (d, dmin f16; 12 scale bytes; 128 nibble bytes)
            blocks = rows * cols // 256
            raw = np.zeros((blocks, 144), dtype=np.uint8)
            raw[:, 0:2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
            raw[:, 4:16] = rng.integers(0, 64, (blocks, 12), dtype=np.uint8)
            raw[:, 16:] = rng.integers(0, 256, (blocks, 128), dtype=np.uint8)
            return raw.reshape(rows, cols // 256 * 144), qtype
        data = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
        if qtype == gguf.GGMLQuantizationType.F16:
            return data.astype(np.float16), None
        return quantize(data, qtype), qtype

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w = gguf.GGUFWriter(str(path), shape.arch)
    w.add_name(shape.name)
    w.add_block_count(shape.n_layer)
    w.add_context_length(shape.ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(ffs if isinstance(shape.n_ff, tuple) else shape.n_ff)
    w.add_head_count(heads if isinstance(shape.n_head, tuple) else shape.n_head)
    w.add_head_count_kv(kv_heads if isinstance(shape.n_head_kv, tuple) else shape.n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    if shape.head_dim and shape.mla is None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
    if shape.n_swa:
        w.add_sliding_window(shape.n_swa)
    w.add_file_type({"F16": 1, "Q8_0": 7, "Q4_K": 15, "Q4_0": 2}[shape.weights])
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(shape.n_vocab)])
    w.add_token_scores([0.0] * shape.n_vocab)
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (shape.n_vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    if shape.mla is not None:
        _mla_metadata(w, shape, shape.mla)
        return _write_zeros(w, path, _mla_tensors(shape, shape.mla), qtype)
    if shape.n_expert:
        w.add_expert_count(shape.n_expert)
        w.add_expert_used_count(shape.n_expert_used)
        if shape.n_ff_exp:
            w.add_expert_feed_forward_length(shape.n_ff_exp)
        return _write_zeros(w, path, _moe_tensors(shape, head_dim), qtype)

    tensors: list[tuple[str, np.ndarray, gguf.GGMLQuantizationType | None]] = []

    def add(name: str, rows: int, cols: int) -> None:
        data, raw = weight(rows, cols)
        tensors.append((name, data, raw))

    add("token_embd.weight", shape.n_vocab, shape.n_embd)
    tensors.append(("output_norm.weight", norm(shape.n_embd), None))
    if not shape.tied:
        add("output.weight", shape.n_vocab, shape.n_embd)
    for i in range(shape.n_layer):
        q, kv = heads[i] * head_dim, kv_heads[i] * head_dim
        tensors.append((f"blk.{i}.attn_norm.weight", norm(shape.n_embd), None))
        if shape.arch == "openelm":
            add(f"blk.{i}.attn_qkv.weight", q + 2 * kv, shape.n_embd)
            tensors.append((f"blk.{i}.attn_q_norm.weight", norm(head_dim), None))
            tensors.append((f"blk.{i}.attn_k_norm.weight", norm(head_dim), None))
        else:
            add(f"blk.{i}.attn_q.weight", q, shape.n_embd)
            add(f"blk.{i}.attn_k.weight", kv, shape.n_embd)
            add(f"blk.{i}.attn_v.weight", kv, shape.n_embd)
        add(f"blk.{i}.attn_output.weight", shape.n_embd, q)
        if shape.arch == "gemma2":
            tensors.append((f"blk.{i}.post_attention_norm.weight", norm(shape.n_embd), None))
            tensors.append((f"blk.{i}.post_ffw_norm.weight", norm(shape.n_embd), None))
        tensors.append((f"blk.{i}.ffn_norm.weight", norm(shape.n_embd), None))
        add(f"blk.{i}.ffn_gate.weight", ffs[i], shape.n_embd)
        add(f"blk.{i}.ffn_up.weight", ffs[i], shape.n_embd)
        add(f"blk.{i}.ffn_down.weight", shape.n_embd, ffs[i])
    for name, data, raw in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _mla_metadata(w: Any, shape: Shape, mla: MLA) -> None:
    import gguf

    """deepseek2's keys: one latent K per layer (kv_lora + rope wide, V read from it), the per-head lengths the
    graph decompresses to, the ranks, and the experts (DeepSeek-V3's sigmoid gating)."""
    if mla.split:
        w.add_key_length(mla.kv_lora + mla.rope)
        w.add_value_length(mla.kv_lora)
        w.add_key_length_mla(mla.nope + mla.rope)
        w.add_value_length_mla(mla.v_head)
    else:
        w.add_key_length(mla.nope + mla.rope)
        w.add_value_length(mla.v_head)
    w.add_rope_dimension_count(mla.rope)
    w.add_q_lora_rank(mla.q_lora)
    w.add_kv_lora_rank(mla.kv_lora)
    w.add_leading_dense_block_count(shape.dense_lead)
    if shape.n_expert:
        w.add_expert_count(shape.n_expert)
        w.add_expert_used_count(shape.n_expert_used)
        w.add_expert_feed_forward_length(shape.n_ff_exp)
        w.add_expert_shared_count(shape.n_expert_shared)
        w.add_expert_weights_scale(2.5)
        w.add_expert_weights_norm(True)
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)


def _mla_tensors(shape: Shape, mla: MLA) -> list[tuple[str, tuple[int, ...]]]:
    """(name, ggml dims with the row length first) of a deepseek2 file with the split MLA matrices."""
    e, h, v = shape.n_embd, int(shape.n_head) if not isinstance(shape.n_head, tuple) else shape.n_head[0], shape.n_vocab
    ff = shape.n_ff if isinstance(shape.n_ff, int) else shape.n_ff[0]
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (e, v))]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,)),
            (b + "attn_q_a.weight", (e, mla.q_lora)),
            (b + "attn_q_a_norm.weight", (mla.q_lora,)),
            (b + "attn_q_b.weight", (mla.q_lora, h * (mla.nope + mla.rope))),
            (b + "attn_kv_a_mqa.weight", (e, mla.kv_lora + mla.rope)),
            (b + "attn_kv_a_norm.weight", (mla.kv_lora,)),
            *(
                [
                    (b + "attn_k_b.weight", (mla.nope, mla.kv_lora, h)),
                    (b + "attn_v_b.weight", (mla.kv_lora, mla.v_head, h)),
                ]
                if mla.split
                else [(b + "attn_kv_b.weight", (mla.kv_lora, h * (mla.nope + mla.v_head)))]
            ),
            (b + "attn_output.weight", (h * mla.v_head, e)),
            (b + "ffn_norm.weight", (e,)),
        ]
        if i < shape.dense_lead or not shape.n_expert:
            out += [(b + "ffn_gate.weight", (e, ff)), (b + "ffn_up.weight", (e, ff)), (b + "ffn_down.weight", (ff, e))]
            continue
        n, f, sh = shape.n_expert, shape.n_ff_exp, shape.n_ff_exp * shape.n_expert_shared
        out += [
            (b + "ffn_gate_inp.weight", (e, n)),
            (b + "exp_probs_b.bias", (n,)),
            (b + "ffn_gate_exps.weight", (e, f, n)),
            (b + "ffn_up_exps.weight", (e, f, n)),
            (b + "ffn_down_exps.weight", (f, e, n)),
            (b + "ffn_gate_shexp.weight", (e, sh)),
            (b + "ffn_up_shexp.weight", (e, sh)),
            (b + "ffn_down_shexp.weight", (sh, e)),
        ]
    return [*out, ("output_norm.weight", (e,)), ("output.weight", (e, v))]


def _moe_tensors(shape: Shape, head_dim: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, ggml dims with the row length first) of a MoE file: per-head attention (qwen3moe's Q and K norms)
    and routed experts in every layer, ``n_ff_exp`` wide (llama's experts: ``n_ff``)."""
    e, v, n = shape.n_embd, shape.n_vocab, shape.n_expert
    h, kv = int(_per_layer(shape.n_head, 1)[0]), int(_per_layer(shape.n_head_kv, 1)[0])
    f = shape.n_ff_exp or int(_per_layer(shape.n_ff, 1)[0])
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (e, v))]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,)),
            (b + "attn_q.weight", (e, h * head_dim)),
            (b + "attn_k.weight", (e, kv * head_dim)),
            (b + "attn_v.weight", (e, kv * head_dim)),
            (b + "attn_output.weight", (h * head_dim, e)),
        ]
        if shape.arch == "qwen3moe":
            out += [(b + "attn_q_norm.weight", (head_dim,)), (b + "attn_k_norm.weight", (head_dim,))]
        out += [
            (b + "ffn_norm.weight", (e,)),
            (b + "ffn_gate_inp.weight", (e, n)),
            (b + "ffn_gate_exps.weight", (e, f, n)),
            (b + "ffn_up_exps.weight", (e, f, n)),
            (b + "ffn_down_exps.weight", (f, e, n)),
        ]
    return [*out, ("output_norm.weight", (e,)), ("output.weight", (e, v))]


def _write_zeros(w: Any, path: Path, tensors: list[tuple[str, tuple[int, ...]]], qtype: Any) -> Path:
    """Write the header and leave every tensor's data a hole of zeros (a valid all-zero weight in f16, f32 and
    q8_0): the file has its full size without the disk or the time to write it. Vectors and the router are f32."""
    import gguf

    from modelctl.gguf import row_bytes

    size = 0
    for name, dims in tensors:
        t = gguf.GGMLQuantizationType.F32 if len(dims) == 1 or "gate_inp" in name else qtype
        rows = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
        nbytes = row_bytes(int(t), dims[0]) * rows
        dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(t, np.uint8)
        last = dims[0] if dtype is not np.uint8 else row_bytes(int(t), dims[0])
        w.add_tensor_info(name, [*reversed(dims[1:]), last], np.dtype(dtype), nbytes, raw_dtype=t)
        size += -(-nbytes // 32) * 32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with path.open("r+b") as f:
        f.seek(0, 2)
        f.truncate(-(-f.tell() // 32) * 32 + size)
    return path


LOADER = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from llama_cpp import Llama
from modelctl import cpu
from modelctl.runtime.buffers import applied
kwargs = json.loads(sys.argv[2])
with applied(cpu.weight_buffers(sys.argv[3], cpu.features()), [Path(sys.argv[1])]):
    Llama(sys.argv[1], verbose=True, **kwargs)
"""

_LINES = {
    "weights": re.compile(r"model buffer size\s*=\s*([\d.]+) MiB"),
    "kv_cache": re.compile(r"KV buffer size\s*=\s*([\d.]+) MiB"),
    "recurrent": re.compile(r"RS buffer size\s*=\s*([\d.]+) MiB"),
    "output": re.compile(r"output buffer size\s*=\s*([\d.]+) MiB"),
    "compute": re.compile(r"sched_reserve:\s+\S+ compute buffer size\s*=\s*([\d.]+) MiB"),
}


def measure(model: Path, settings: RunSettings, n_ctx: int) -> dict[str, float]:
    """Load ``model`` in a subprocess with ``settings`` and return llama.cpp's buffer sizes (MiB, summed)."""
    kwargs = settings.llama_kwargs(n_ctx=n_ctx, gpu_layers=0)
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(model), json.dumps(kwargs), settings.cpu_buffers, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"llama.cpp failed to load {model.name}: {out.stderr[-1500:]}")
    found = {key: sum(float(v) for v in pattern.findall(out.stderr)) for key, pattern in _LINES.items()}
    if not found["weights"] or not found["compute"]:
        raise RuntimeError(f"llama.cpp printed no buffer sizes for {model.name}")
    found["kv_cache"] += found.pop("recurrent")
    return found


@dataclass(kw_only=True)
class Row:
    model: str
    n_ctx: int
    cache: str
    buffers: str = "auto"
    truth: dict[str, float]
    predicted: dict[str, float]
    problems: list[str] = field(default_factory=list)
    printed: str = ""
    """The row as a table printed it (a row read back from docs/fit_accuracy.md), kept as it was."""

    def check(self) -> Row:
        for key in ("weights", "kv_cache", "output"):
            if abs(self.predicted[key] - self.truth[key]) > EXACT_MIB:
                self.problems.append(f"{key} off by {self.predicted[key] - self.truth[key]:+.2f} MiB")
        c_true, c_pred = self.truth["compute"], self.predicted["compute"]
        if c_pred < c_true - 0.005 or c_pred > c_true * (1 + COMPUTE_OVER) + 0.005:
            self.problems.append(f"compute {100 * (c_pred / c_true - 1):+.1f}%")
        if self.predicted["total"] < sum(self.truth.values()) - 0.005:
            self.problems.append("total under")
        return self

    @property
    def compute_error(self) -> float:
        if self.printed:  # the printed percentage: the figures were rounded
            return float(self.printed.split("|")[9].strip().rstrip("%")) / 100
        return self.predicted["compute"] / self.truth["compute"] - 1


def predicted_mib(est: Estimate) -> dict[str, float]:
    """The prediction in MiB; ``total`` covers the buffers llama.cpp reports, ``host`` what it does not."""
    return {
        "weights": est.weights / MIB,
        "kv_cache": est.kv_cache / MIB,
        "output": est.output / MIB,
        "compute": est.compute / MIB,
        "total": (est.total - est.host_extra) / MIB,
        "host": est.host_extra / MIB,
    }


def cpu_applies(setting: str) -> bool:
    """Whether a case with this MODELCTL_CPU_BUFFERS setting measures something on this CPU (``all``: AMX only)."""
    return setting != "all" or cpu.features().has_amx


def compare(model: Path, label: str, cases: Iterable[Case]) -> list[Row]:
    """Measure and predict ``model`` at each ``(n_ctx, cache[, cpu_buffers])`` case (cases that do not apply to
    this CPU are left out: see :func:`cpu_applies`)."""
    header = read_header(FileSource(model))
    rows = []
    for case in cases:
        n_ctx, cache = case[0], case[1]
        buffers = case[2] if len(case) > 2 else "auto"  # type: ignore[misc]
        if not cpu_applies(buffers):
            continue
        settings = RunSettings(n_ctx=n_ctx, cache_type=cache, gpu_layers=0, cpu_buffers=buffers)
        truth = measure(model, settings, n_ctx)
        est = estimate([header], settings)
        row = Row(model=label, n_ctx=n_ctx, cache=cache, buffers=buffers, truth=truth, predicted=predicted_mib(est))
        rows.append(row.check())
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| model | ctx | cache | CPU buffers | weights MiB (llama.cpp / fit) | KV MiB | output MiB | compute MiB "
        "| compute error | total MiB | + host MiB | ok |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.printed:
            lines.append(r.printed)
            continue
        t, p = r.truth, r.predicted
        lines.append(
            f"| {r.model} | {r.n_ctx} | {r.cache} | {r.buffers} "
            f"| {t['weights']:.2f} / {p['weights']:.2f} | {t['kv_cache']:.2f} / {p['kv_cache']:.2f} "
            f"| {t['output']:.2f} / {p['output']:.2f} | {t['compute']:.2f} / {p['compute']:.2f} "
            f"| {100 * r.compute_error:+.1f}% | {sum(t.values()):.2f} / {p['total']:.2f} | {p['host']:.2f} "
            f"| {'yes' if not r.problems else '; '.join(r.problems)} |"
        )
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    misses = [r for r in rows if r.problems]
    worst = {key: max(abs(r.predicted[key] - r.truth[key]) for r in rows) for key in ("weights", "kv_cache", "output")}
    errors = [r.compute_error for r in rows]
    return (
        f"{len(rows)} comparisons, {len(misses)} outside the targets (weights, KV, output within {EXACT_MIB} MiB; "
        f"compute within +{COMPUTE_OVER:.0%}/-0%; total never under). Largest differences: weights "
        f"{worst['weights']:.2f} MiB, KV {worst['kv_cache']:.2f} MiB, output {worst['output']:.2f} MiB; compute "
        f"from {100 * min(errors):+.1f}% to {100 * max(errors):+.1f}%."
    )


def machine() -> tuple[str, str]:
    """This CPU's model name (``/proc/cpuinfo``) and llama.cpp's CPU feature line (``llama_print_system_info``)."""
    name = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        ids = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields)
        name = fields["model name"] + (f" ({ids})" if ids else "")
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode() if isinstance(info, bytes) else str(info)
    features = text[max(text.find("CPU :"), 0) :].strip().rstrip("|").strip()
    return name, features


def skipped_note() -> str:
    """Which cases this CPU leaves out, and why (empty when none)."""
    if cpu_applies("all"):
        return ""
    n = sum(1 for cases in BUFFER_CASES.values() for c in cases if not cpu_applies(c[2]))
    return (
        f"{n} `all` (AMX) cases skipped: this CPU has no AMX, so `MODELCTL_CPU_BUFFERS=all` loads as `auto` "
        "(unit tests cover the AMX accounting from a feature line)."
    )


def run(*, quick: bool = False, workdir: Path | None = None, only: Sequence[str] = ()) -> list[Row]:
    """Measure every shape (``quick``: a few; ``only``: the generated shapes named, without SmolLM2)."""
    shapes = [s for s in SHAPES if (not quick or s.name in QUICK_SHAPES) and (not only or s.name in only)]
    cases: Sequence[Case] = QUICK_CASES if quick else CASES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if SMOLLM2.is_file() and not only:
            label = "SmolLM2-135M Q4_1"
            smol: Sequence[Case] = cases if quick else (*SMOLLM2_CASES, *BUFFER_CASES.get(label, ()))
            rows += compare(SMOLLM2, label, smol)
        for shape in shapes:
            path = write_gguf(shape, Path(tmp) / f"{shape.name}.gguf")
            own = shape.cases or cases
            rows += compare(path, label_of(shape), own if quick else (*own, *BUFFER_CASES.get(shape.name, ())))
            path.unlink()
    return rows


def label_of(shape: Shape) -> str:
    return f"{shape.name} (held out)" if shape.held_out else shape.name


def parse_table(text: str) -> list[Row]:
    """The rows of a table :func:`table` wrote (its figures as printed), to update some rows in place."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 12 or not cells[1].isdigit():
            continue
        pairs = [tuple(float(x) for x in cells[i].split(" / ")) for i in (4, 5, 6, 7, 9)]
        keys = ("weights", "kv_cache", "output", "compute")
        truth = {k: pairs[i][0] for i, k in enumerate(keys)}
        predicted = {k: pairs[i][1] for i, k in enumerate(keys)} | {"total": pairs[4][1], "host": float(cells[10])}
        problems = [] if cells[11] == "yes" else cells[11].split("; ")
        rows.append(
            Row(
                model=cells[0],
                n_ctx=int(cells[1]),
                cache=cells[2],
                buffers=cells[3],
                truth=truth,
                predicted=predicted,
                problems=problems,
                printed=line.strip(),
            )
        )
    return rows


def update_rows(doc: str, rows: Sequence[Row]) -> str:
    """``doc``'s CPU table with ``rows`` in place of the rows of their models (new models at the end), and its
    summary recounted; the rest of the document as it was."""
    start = doc.index("| model |")
    end = doc.index("\n\n", start)
    old = parse_table(doc[start:end])
    models = {r.model for r in rows}
    kept = [r for r in old if r.model not in models]
    first = next((i for i, r in enumerate(old) if r.model in models), len(old))  # where they were, else the end
    merged = [*kept[:first], *rows, *kept[first:]]
    rest = doc[end:]
    summary_at = rest.index("comparisons,")
    line_start = rest.rfind("\n", 0, summary_at) + 1
    line_end = rest.index("\n", summary_at)
    return doc[:start] + table(merged) + rest[:line_start] + summary(merged) + rest[line_end:]


GPU_SECTION = "\n## GPU backends"
"""Where docs/fit_accuracy.md's GPU part starts: the CPU run keeps it, the --gpu-logs run rewrites it."""


def gpu_main(directory: Path, *, as_json: bool, write: bool) -> int:
    """Compare every record in ``directory`` (benchmarks/gpu_logs.py); exit 1 when a record of the bundled
    llama.cpp misses a target."""
    import gpu_logs

    with tempfile.TemporaryDirectory() as work:
        results = gpu_logs.run(directory, Path(work))
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(gpu_logs.table(results) + "\n\n" + gpu_logs.summary(results))
    if write:
        doc = ROOT / "docs" / "fit_accuracy.md"
        head = doc.read_text().split(GPU_SECTION, 1)[0].rstrip("\n")
        doc.write_text(
            head
            + "\n"
            + GPU_SECTION
            + "\n\n"
            + gpu_logs.DOC
            + "\n\n"
            + gpu_logs.summary(results)
            + "\n\n"
            + gpu_logs.table(results)
            + "\n"
        )
    return 1 if any(r.misses() for r in results if not r.apart) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="SmolLM2 at two contexts and two generated shapes")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/fit_accuracy.md")
    parser.add_argument("--gpu-logs", type=Path, metavar="DIR", help="compare with the GPU load logs in DIR")
    parser.add_argument("--json", action="store_true", help="with --gpu-logs: JSON rows per record")
    parser.add_argument(
        "--shape",
        action="append",
        choices=[s.name for s in SHAPES],
        help="only this generated shape (repeatable); its rows replace its rows in docs/fit_accuracy.md (the summary "
        "is recounted from the printed figures: a largest difference under 0.005 MiB may read lower)",
    )
    parser.add_argument("--mla-grid", action="store_true", help="the MLA loads tests/unit/fit/test_fit_mla.py pins")
    parser.add_argument(
        "--moe-grid", action="store_true", help="the MoE loads tests/unit/fit/test_fit_moe_compute.py pins"
    )
    parser.add_argument(
        "--heads-grid", action="store_true", help="the per-head DeepSeek loads test_fit_deepseek_heads.py pins"
    )
    parser.add_argument(
        "--flash-grid", action="store_true", help="the flash-attention layer loads test_fit_flash_layers.py pins"
    )
    args = parser.parse_args(argv)
    if args.mla_grid:
        mla_grid()
        return 0
    if args.moe_grid:
        measure_grid(MOE_GRID, MOE_GRID_CASES)
        return 0
    if args.heads_grid:
        measure_grid(HEADS_GRID, HEADS_GRID_CASES)
        return 0
    if args.flash_grid:
        measure_grid(FLASH_GRID, FLASH_GRID_CASES)
        return 0
    if args.gpu_logs is not None:
        return gpu_main(args.gpu_logs, as_json=args.json, write=not args.no_write and not args.json)
    if args.shape:
        rows = run(only=args.shape)
        print(table(rows) + "\n\n" + summary(rows))
        if not args.no_write:
            doc = ROOT / "docs" / "fit_accuracy.md"
            doc.write_text(update_rows(doc.read_text(), rows))
        return 1 if any(r.problems for r in rows) else 0
    rows = run(quick=args.quick)
    text = table(rows)
    note = summary(rows)
    name, features = machine()
    skipped = skipped_note()
    where = f"CPU: {name}. llama.cpp: `{features}`."
    print(f"{where}\n\n{text}\n\n{note}" + (f"\n\n{skipped}" if skipped else ""))
    if not args.no_write and not args.quick:
        doc = ROOT / "docs" / "fit_accuracy.md"
        old = doc.read_text() if doc.exists() else ""
        gpu_part = GPU_SECTION + old.split(GPU_SECTION, 1)[1] if GPU_SECTION in old else ""
        doc.write_text(
            "# Fit check accuracy (CPU, llama-cpp-python 0.3.36)\n\n"
            f"Measured on {name}; llama.cpp's CPU features: `{features}`.\n\n"
            "Generated by `.venv/bin/python benchmarks/fit_accuracy.py`: for each model, context and cache type, "
            "the buffer sizes llama.cpp prints when it loads the model with the settings `modelctl run` uses "
            "(left) against modelctl's prediction from the GGUF header alone (right), in MiB. *total* is the sum "
            "of those four buffers; *+ host* is what the fit check adds for llama-cpp-python's own arrays "
            "(the `n_batch x n_vocab` float32 scores and friends), which llama.cpp never reports. f16 caches load "
            "without flash attention, q8_0 / q4_0 caches with it (llama.cpp needs it for a quantised V cache). "
            "*CPU buffers* is `MODELCTL_CPU_BUFFERS` for the load: `auto` (the default: CPU_REPACK copies, never "
            "AMX), `all` (llama.cpp's own choice: AMX copies first, then CPU_REPACK; measured at load time only, "
            "on CPUs with AMX) or `none` (the mmapped file alone). "
            "Shapes marked *held out* were not used to calibrate the compute formula. The MLA shapes (`-mla`, "
            "`mla-small`) are "
            "deepseek2's latent attention at DeepSeek-V3, Kimi-K2 and V2 widths (two layers, the first dense, "
            "zero weights in a sparse file) at their own cases: f16 without flash attention up to 4K, the "
            "quantised caches with it up to 16K. The MoE shapes are qwen3moe at Qwen3-30B-A3B and Qwen3-235B-A22B "
            "widths (the latter with 32 of its 128 experts: only the router depends on the count) and Mixtral-8x7B's "
            "as llama with experts (Q8_0), two layers of zero weights in a sparse file, at 512 and 4096 (f16) and "
            "512, 4096 and 16K (q8_0).\n\n"
            + text
            + "\n\n"
            + note
            + (f"\n\n{skipped}" if skipped else "")
            + "\n"
            + gpu_part
        )
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
