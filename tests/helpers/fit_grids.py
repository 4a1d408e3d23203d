"""The shapes benchmarks/fit_accuracy.py measures as grids, read back as headers, and the check every pinned grid
load is held to: the issue's target for compute, +15% / -0% of what llama.cpp reserved (to its 0.01 MiB print)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.benchmarks import load
from modelctl.fit.estimate import estimate
from modelctl.gguf import FileSource, GGUFHeader, read_header

MIB = 1 << 20
OVER = 0.15
PRINTED_MIB = 0.01
fa = load("fit_accuracy")


def headers(grid: Mapping[str, Any], work: Path) -> dict[str, GGUFHeader]:
    """Each shape of ``grid`` written as benchmarks/fit_accuracy.py writes it for the load, and its header read."""
    return {name: read_header(FileSource(fa.write_gguf(shape, work / f"{name}.gguf"))) for name, shape in grid.items()}


def check(header: GGUFHeader, n_ctx: int, n_ubatch: int, cache: str, flash: bool, llama_mib: float) -> None:
    """The prediction for a grid load (its settings: :func:`fit_accuracy.grid_settings`) is within the target."""
    predicted = estimate(header, fa.grid_settings(n_ctx, n_ubatch, cache, flash), n_ctx=n_ctx).compute / MIB
    assert llama_mib - PRINTED_MIB <= predicted <= llama_mib * (1 + OVER), (predicted, llama_mib)
