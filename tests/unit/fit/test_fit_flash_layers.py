"""The flash-attention layer step of dense models, where it outgrows the logits step, against what llama.cpp
reserves on the CPU.

In every earlier measured load with flash attention the logits step decided the compute buffer, so the layers'
step was never seen: with a small vocabulary (what a server reserving one output per sequence, or a feed-forward
wider than a third of the vocabulary, leaves) it was under, by one batch row (42.01 MiB reserved where the fit
said 40.25 for Qwen3-0.6B's widths at 16K; 132.01 against 124.25 for Mistral-7B's). The figures are llama.cpp's own
(``CPU compute buffer size``, llama-cpp-python 0.3.36 on an Intel Xeon with AMX), measured by loading files of
these shapes::

    .venv/bin/python benchmarks/fit_accuracy.py --flash-grid     # MEASURED
"""

from __future__ import annotations

import pytest
from helpers import fit_grids  # tests/ is on sys.path

from modelctl.gguf import GGUFHeader

MIB = fit_grids.MIB
fa = fit_grids.fa  # its FLASH_GRID holds the shapes measured

# (shape, n_ctx, n_ubatch, cache, flash attention, llama.cpp's CPU compute buffer in MiB)
MEASURED: list[tuple[str, int, int, str, bool, float]] = [
    # .venv/bin/python benchmarks/fit_accuracy.py --flash-grid
    ("qwen3-06b-widths", 4096, 512, "f16", True, 30.01),
    ("qwen3-06b-widths", 16384, 512, "f16", True, 42.01),
    ("qwen3-06b-widths", 16384, 512, "q8_0", True, 42.09),
    ("qwen3-06b-widths", 4096, 256, "q8_0", True, 15.08),
    ("qwen3-06b-widths", 4096, 1024, "f16", True, 60.03),
    ("qwen3-06b-widths", 16384, 512, "q4_0", True, 42.09),
    ("mistral-7b-widths", 4096, 512, "f16", True, 120.01),
    ("mistral-7b-widths", 16384, 512, "f16", True, 132.01),
    ("mistral-7b-widths", 16384, 512, "q8_0", True, 124.09),
    ("mistral-7b-widths", 4096, 256, "q8_0", True, 60.08),
    ("mistral-7b-widths", 4096, 1024, "f16", True, 240.03),
    ("mistral-7b-widths", 16384, 512, "q4_0", True, 124.09),
]


@pytest.fixture(scope="module")
def headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GGUFHeader]:
    return fit_grids.headers(fa.FLASH_GRID, tmp_path_factory.mktemp("flash"))


@pytest.mark.parametrize(("name", "n_ctx", "n_ubatch", "cache", "flash", "llama_mib"), MEASURED)
def test_flash_attention_layer_step_is_within_target(
    headers: dict[str, GGUFHeader], name: str, n_ctx: int, n_ubatch: int, cache: str, flash: bool, llama_mib: float
) -> None:
    fit_grids.check(headers[name], n_ctx, n_ubatch, cache, flash, llama_mib)


def test_the_layer_step_decides_these_loads(headers: dict[str, GGUFHeader]) -> None:
    """The loads measure what they are meant to: the logits step (2048 tokens of vocabulary) is below them all."""
    for name, _, n_ubatch, _, _, llama_mib in MEASURED:
        logits = 2048 * n_ubatch * 4 / MIB
        assert logits < llama_mib / 3, name
