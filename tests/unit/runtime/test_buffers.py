"""The tensor-override patterns that put exactly the repackable matrices in CPU_REPACK (no llama.cpp needed)."""

from __future__ import annotations

import re

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
