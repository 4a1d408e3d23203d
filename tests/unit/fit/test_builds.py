"""llama.cpp's allocation rules by version (modelctl.fit.builds): the bundled ones by default, older ones only when
asked for, each changing what its pull request changed and nothing else."""

from __future__ import annotations

import pytest
from test_fit_estimate import header
from test_fit_mla import header as mla_header  # tests/unit/fit is on sys.path (rootdir conftest)

from modelctl.cpu import WeightBuffers
from modelctl.fit.builds import BUNDLED, KV_PAD, LlamaBuild
from modelctl.fit.estimate import estimate, kv_cells
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import shape_of

NONE = WeightBuffers(setting="none")
BEFORE_SET_ROWS = LlamaBuild(set_rows=False, kv_pad_no_flash=32)


def test_the_default_is_the_bundled_build() -> None:
    assert LlamaBuild() == BUNDLED and BUNDLED.set_rows and not BUNDLED.mla_v
    assert BUNDLED.kv_pad(True) == BUNDLED.kv_pad(False) == KV_PAD == 256


def test_an_older_build_pads_only_without_flash_attention_to_32_cells() -> None:
    shape = shape_of(header())
    off, on = RunSettings(n_ctx=1000), RunSettings(n_ctx=1000, flash_attn="on")
    assert kv_cells(shape, off, 1000) == (1024, 1024)
    assert kv_cells(shape, off, 1000, BEFORE_SET_ROWS) == (1024, 1024)  # 32 x 32 = 1024
    assert kv_cells(shape, RunSettings(n_ctx=128), 128, BEFORE_SET_ROWS)[0] == 128
    assert kv_cells(shape, RunSettings(n_ctx=128), 128)[0] == 256
    assert kv_cells(shape, on, 1000, BEFORE_SET_ROWS) == (1024, 1024)  # 256 with flash attention, then as now


def test_without_set_rows_the_row_indices_leave_the_host_and_the_gpu() -> None:
    """One index per token for K and one per value of the transposed V, int64, on the host and copied to the GPU:
    for 4 KV heads of 32 at 512 tokens, 512 x 8 x (1 + 64) bytes each."""
    h = header(n_layer=4, n_embd=256, n_head=8, n_head_kv=2)
    settings = RunSettings(n_ctx=4096)
    now = estimate(h, settings, gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    before = estimate(h, settings, gpu_layers=-1, gpu_split=[1.0], buffers=NONE, build=BEFORE_SET_ROWS)
    idxs = 512 * 8 * (1 + 2 * 32)
    assert now.cpu.compute - before.cpu.compute == idxs
    assert now.gpus[0].compute - before.gpus[0].compute == idxs
    assert now.kv_cache == before.kv_cache and now.weights == before.weights


def test_an_mla_cache_with_a_v_part_holds_the_latent_twice_less_the_rope() -> None:
    """Before the V-less cache each cell kept K (kv_lora + rope) and V (kv_lora) values; now K only."""
    h = mla_header("v3-moe")
    settings = RunSettings(n_ctx=4096, flash_attn="on")
    now = estimate(h, settings, buffers=NONE).kv_cache
    before = estimate(h, settings, buffers=NONE, build=LlamaBuild(mla_v=True)).kv_cache
    assert before / now == pytest.approx((576 + 512) / 576)


def test_a_record_names_only_rules_that_exist() -> None:
    assert LlamaBuild.from_names({"set_rows": False}) == LlamaBuild(set_rows=False)
    with pytest.raises(ValueError, match=r"unknown llama\.cpp build rule"):
        LlamaBuild.from_names({"set_row": False})


def test_before_the_iswa_cache_every_layer_keeps_the_whole_context() -> None:
    """gemma3-style layers (five sliding-window layers to one global, window 512): the bundled build keeps
    pad256(512 + 512) cells for the window layers; before the iSWA cache (PR 13194) they kept all of them."""
    h = header(
        arch="gemma3",
        n_layer=6,
        extra={"gemma3.attention.sliding_window": 512, "gemma3.attention.key_length": 32},
    )
    shape = shape_of(h)
    settings = RunSettings(n_ctx=8192, swa_full=False)
    assert kv_cells(shape, settings, 8192) == (8192, 1024)
    assert kv_cells(shape, settings, 8192, LlamaBuild(swa_cache=False)) == (8192, 8192)
    assert kv_cells(shape, RunSettings(n_ctx=8192, swa_full=True), 8192) == (8192, 8192)


def test_one_output_per_sequence_shrinks_only_the_logits() -> None:
    """llama-server's n_outputs_max (PR 23861): the output device reserves logits for one token per sequence instead
    of the whole batch; the layers' steps are untouched."""
    h = header(n_layer=4, n_embd=256, n_vocab=32000)
    settings = RunSettings(n_ctx=4096, flash_attn="on", n_seq=2, kv_unified=True)
    every = estimate(h, settings, gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    one = estimate(h, settings, gpu_layers=-1, gpu_split=[1.0], buffers=NONE, build=LlamaBuild(one_output_per_seq=True))
    e_t, idxs = 256 * 512 * 4, 512 * 8 * 2  # a batch row; the K and V row indices (flash attention: V not transposed)
    assert every.gpus[0].compute == 32000 * 512 * 4 + e_t + idxs  # the logits of every token decide
    masks, f_t = 4096 * 512 * 2, 512 * 512 * 4  # f16 mask; the feed-forward rows (n_ff 512)
    layers = masks + 3 * f_t + 5 * e_t + (256 << 10) + idxs
    assert one.gpus[0].compute == layers  # two rows of logits no longer hide the layers' step
    assert one.kv_cache == every.kv_cache and one.weights == every.weights
