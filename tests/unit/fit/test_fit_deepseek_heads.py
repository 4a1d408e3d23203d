"""The compute buffer of DeepSeek files converted before llama.cpp's MLA cache (one joint ``attn_kv_b`` matrix; the
runtime keeps a per-head K and V cache for them, and such files are still published and loaded) against what
llama.cpp reserves on the CPU.

The figures are llama.cpp's own (``CPU compute buffer size``, llama-cpp-python 0.3.36 on an Intel Xeon with AMX),
measured by loading two-layer files of DeepSeek-V3 and -V2 widths with zero weights (sparse files)::

    .venv/bin/python benchmarks/fit_accuracy.py --heads-grid     # MEASURED

With flash attention the fit was under (-2.7% at V2 widths: 276.25 MiB predicted, 284.01 reserved) or far over
(+27% at V3 widths: the per-head models' expert rows); now the attention's per-head tensors
(:func:`modelctl.fit.estimate.deepseek_heads`) and the DeepSeek graph's own expert step decide.
"""

from __future__ import annotations

import pytest
from helpers import fit_grids  # tests/ is on sys.path

from modelctl.gguf import GGUFHeader

fa = fit_grids.fa  # its HEADS_GRID holds the shapes measured

# (shape, n_ctx, n_ubatch, cache, flash attention, llama.cpp's CPU compute buffer in MiB)
MEASURED: list[tuple[str, int, int, str, bool, float]] = [
    # .venv/bin/python benchmarks/fit_accuracy.py --heads-grid
    ("v3-heads", 4096, 512, "f16", True, 286.01),
    ("v3-heads", 16384, 512, "f16", True, 298.01),
    ("v3-heads", 16384, 1024, "q8_0", True, 596.06),
    ("v3-heads", 1024, 256, "f16", True, 141.51),
    ("v3-heads", 512, 512, "f16", False, 345.01),
    ("v3-heads", 4096, 512, "f16", False, 1248.01),
    ("v3-heads", 1024, 1024, "f16", False, 948.02),
    ("v2-heads", 4096, 512, "f16", True, 284.01),
    ("v2-heads", 16384, 512, "f16", True, 296.01),
    ("v2-heads", 16384, 1024, "q8_0", True, 560.06),
    ("v2-heads", 1024, 256, "f16", True, 140.51),
    ("v2-heads", 512, 512, "f16", False, 322.01),
    ("v2-heads", 4096, 512, "f16", False, 1225.01),
    ("v2-heads", 1024, 1024, "f16", False, 902.02),
]


@pytest.fixture(scope="module")
def headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GGUFHeader]:
    return fit_grids.headers(fa.HEADS_GRID, tmp_path_factory.mktemp("heads"))


@pytest.mark.parametrize(("name", "n_ctx", "n_ubatch", "cache", "flash", "llama_mib"), MEASURED)
def test_per_head_deepseek_compute_is_within_target(
    headers: dict[str, GGUFHeader], name: str, n_ctx: int, n_ubatch: int, cache: str, flash: bool, llama_mib: float
) -> None:
    fit_grids.check(headers[name], n_ctx, n_ubatch, cache, flash, llama_mib)


def test_the_grid_covers_both_widths_and_both_attention_paths() -> None:
    assert {m[0] for m in MEASURED} == set(fa.HEADS_GRID)
    assert {m[4] for m in MEASURED} == {True, False}


def test_the_files_are_the_per_head_kind(headers: dict[str, GGUFHeader]) -> None:
    """No split K/V matrices, so the fit reads a per-head cache (128 KV heads of 192 + 128), not MLA."""
    from modelctl.fit.shapes import shape_of

    for header in headers.values():
        shape = shape_of(header)
        assert not shape.mla and shape.n_rot == 64
        assert header.tensor("blk.0.attn_kv_b.weight") is not None and header.tensor("blk.0.attn_k_b.weight") is None
        assert shape.layers[0].n_head_kv == 128 and shape.layers[0].k_len == 192
