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
    monkeypatch.setattr(engine, "applied", lambda choice, paths, experts: seen.append(choice))
    for layers in (0, 12, -1):
        engine.weight_buffers(engine.LoadSpec(model_path=Path("m.gguf"), n_ctx=512, n_gpu_layers=layers))
    on_cpu, partial, full = seen
    assert on_cpu.repack_by_override and not on_cpu.use_extra_bufts and not on_cpu.amx
    for offloaded in (partial, full):
        assert not offloaded.repack_by_override and not offloaded.use_extra_bufts and not offloaded.amx


EXPERT_SUFFIXES = ("ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_exps.weight", "ffn_gate_up_exps.weight")
OTHER_SUFFIXES = ("ffn_up.weight", "ffn_gate_inp.weight", "ffn_up_shexp.weight", "attn_q.weight", "ffn_down_exps.bias")


@given(n_cpu_moe=st.integers(0, 64))
def test_the_expert_pattern_matches_the_experts_of_the_first_layers_only(n_cpu_moe: int) -> None:
    from modelctl.cpu import EXPERT_TENSORS
    from modelctl.runtime.buffers import expert_pattern

    pattern = expert_pattern(n_cpu_moe)
    if not n_cpu_moe:
        assert pattern is None
        return
    assert pattern is not None
    for layer in range(70):
        for suffix in EXPERT_SUFFIXES + OTHER_SUFFIXES:
            name = f"blk.{layer}.{suffix}"
            expected = layer < n_cpu_moe and EXPERT_TENSORS.search(name) is not None
            assert (re.search(pattern, name) is not None) is expected, name
    assert re.search(pattern, "xblk.0.ffn_up_exps.weight") is None and re.search(pattern, "output.weight") is None


def test_experts_go_first_to_the_cpus_own_buffer_type_then_the_repacked_matrices(tmp_path: object) -> None:
    """llama.cpp takes the first override that matches: an expert must not be claimed by a CPU_REPACK pattern."""
    from pathlib import Path

    from helpers.moe_gguf import tiny_moe

    from modelctl.cpu import WeightBuffers
    from modelctl.runtime.buffers import overrides_for
    from modelctl.runtime.ggml import for_llama_cpp

    path = tiny_moe(Path(str(tmp_path)) / "m.gguf")
    by_name = WeightBuffers(setting="auto", repack={2: 8}, use_extra_bufts=False, repack_by_override=True)
    found = overrides_for(by_name, [path], 2)
    ggml = for_llama_cpp()
    repack = dict(ggml.extra_buffer_types())["CPU_REPACK"]
    assert found[0] == (r"^blk\.(0|1)\.ffn_(up|down|gate|gate_up)_(ch|)exps\.", ggml.cpu_buffer_type())
    assert found[1:] and all(buft == repack for _, buft in found[1:])
    assert overrides_for(by_name, [path], 0) == found[1:]
    plain = WeightBuffers(setting="all", repack={2: 8})
    assert overrides_for(plain, [path], 1) == [(r"^blk\.(0)\.ffn_(up|down|gate|gate_up)_(ch|)exps\.", found[0][1])]


def test_the_plans_experts_are_overridden_only_beside_offloaded_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without offloaded layers the experts are in host memory anyway, and the override would cost them CPU_REPACK;
    with them, an AMX CPU still gets no AMX buffer (the extra types stay off)."""
    from pathlib import Path

    from modelctl import cpu
    from modelctl.runtime import engine

    xeon = cpu.from_llama_line("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1")
    monkeypatch.setattr(cpu, "features", lambda *a, **k: xeon)
    seen: list[tuple[cpu.WeightBuffers, int]] = []
    monkeypatch.setattr(engine, "applied", lambda choice, paths, experts: seen.append((choice, experts)))
    for layers in (0, 20, -1):
        spec = engine.LoadSpec(model_path=Path("m.gguf"), n_ctx=512, n_gpu_layers=layers, n_cpu_moe=6)
        engine.weight_buffers(spec)
    assert [experts for _, experts in seen] == [0, 6, 6]
    assert all(not choice.amx and not choice.use_extra_bufts for choice, _ in seen)
    assert "experts of 6 layers in RAM" in engine.LoadSpec(model_path=Path("m"), n_ctx=1, n_cpu_moe=6).describe()
