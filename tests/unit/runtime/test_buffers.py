"""The tensor-override patterns that put exactly the repackable matrices in CPU_REPACK (no llama.cpp needed)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl.runtime.buffers import override_patterns

SUFFIXES = ("attn_q.weight", "attn_k.weight", "ffn_down.weight", "ffn_up_exps.weight", "attn_output.weight")


def _matches(patterns: list[str], name: str) -> bool:
    return any(re.search(p, name) for p in patterns)  # std::regex_search, ECMAScript: the same for these patterns


def test_block_tensors_are_grouped_by_suffix() -> None:
    names = ["blk.0.attn_q.weight", "blk.1.attn_q.weight", "blk.10.attn_q.weight", "output.weight"]
    patterns = override_patterns(names)
    assert patterns == [r"^blk\.(0|1|10)\.attn_q\.weight$", r"^output\.weight$"]


@given(
    chosen=st.sets(st.tuples(st.integers(0, 40), st.sampled_from(SUFFIXES)), max_size=60),
    output=st.booleans(),
)
def test_patterns_match_exactly_the_chosen_tensors(chosen: set[tuple[int, str]], output: bool) -> None:
    names = [f"blk.{layer}.{suffix}" for layer, suffix in sorted(chosen)] + (["output.weight"] if output else [])
    patterns = override_patterns(names)
    assert len(patterns) <= len(SUFFIXES) + 1  # a handful of regexes, whatever the model's depth
    every = [f"blk.{layer}.{suffix}" for layer in range(41) for suffix in SUFFIXES]
    every += ["output.weight", "token_embd.weight", "blk.1.attn_q.weight.bias", "xblk.1.attn_q.weight"]
    for name in every:
        assert _matches(patterns, name) is (name in names), name


def test_offloaded_layers_get_no_tensor_overrides_on_an_amx_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """An override would pin a GPU layer's matrices to the host and turn llama.cpp's pipeline parallelism off."""
    from pathlib import Path

    from modelctl import cpu
    from modelctl.runtime import engine

    xeon = cpu.from_llama_line("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1")
    monkeypatch.setattr(cpu, "features", lambda *a, **k: xeon)
    seen: list[cpu.WeightBuffers] = []
    monkeypatch.setattr(engine, "applied", lambda choice, paths: seen.append(choice))
    for layers in (0, 12, -1):
        engine.weight_buffers(engine.LoadSpec(model_path=Path("m.gguf"), n_ctx=512, n_gpu_layers=layers))
    on_cpu, partial, full = seen
    assert on_cpu.repack_by_override and not on_cpu.use_extra_bufts and not on_cpu.amx
    for offloaded in (partial, full):
        assert not offloaded.repack_by_override and not offloaded.use_extra_bufts and not offloaded.amx
