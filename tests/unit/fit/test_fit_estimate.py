"""The estimator against llama.cpp's allocation rules, on headers built in memory (no files, no llama.cpp)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from modelctl.cpu import WeightBuffers
from modelctl.errors import GGUFError
from modelctl.fit.estimate import compute_buffer, estimate, kv_cells
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import shape_of
from modelctl.gguf import GGUFHeader, TensorInfo, Value, row_bytes

F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
NONE = WeightBuffers(setting="none")


def header(
    *,
    arch: str = "llama",
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int | list[int] = 8,
    n_head_kv: int | list[int] = 2,
    n_ff: int = 512,
    n_vocab: int = 1000,
    wtype: int = F16,
    tied: bool = False,
    ctx: int = 8192,
    extra: dict[str, Value] | None = None,
) -> GGUFHeader:
    """A llama-style header: token_embd, per-layer attention and FFN, output_norm, output (unless tied)."""
    heads = n_head if isinstance(n_head, list) else [n_head] * n_layer
    kv = n_head_kv if isinstance(n_head_kv, list) else [n_head_kv] * n_layer
    hd = n_embd // heads[0] if heads[0] else 0
    shapes: list[tuple[str, tuple[int, ...], int]] = [("token_embd.weight", (n_embd, n_vocab), wtype)]
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.attn_q.weight", (n_embd, heads[i] * hd), wtype),
            (f"blk.{i}.attn_k.weight", (n_embd, kv[i] * hd), wtype),
            (f"blk.{i}.attn_v.weight", (n_embd, kv[i] * hd), wtype),
            (f"blk.{i}.attn_output.weight", (heads[i] * hd, n_embd), wtype),
            (f"blk.{i}.ffn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.ffn_gate.weight", (n_embd, n_ff), wtype),
            (f"blk.{i}.ffn_up.weight", (n_embd, n_ff), wtype),
            (f"blk.{i}.ffn_down.weight", (n_ff, n_embd), wtype),
        ]
    shapes.append(("output_norm.weight", (n_embd,), F32))
    if not tied:
        shapes.append(("output.weight", (n_embd, n_vocab), wtype))
    tensors, offset = [], 0
    for name, shape, t in shapes:
        n = row_bytes(t, shape[0]) * (shape[1] if len(shape) > 1 else 1)
        tensors.append(TensorInfo(name, shape, t, offset, n))
        offset += -(-n // 32) * 32
    meta: dict[str, Value] = {
        "general.architecture": arch,
        f"{arch}.block_count": n_layer,
        f"{arch}.embedding_length": n_embd,
        f"{arch}.feed_forward_length": n_ff,
        f"{arch}.attention.head_count": n_head if isinstance(n_head, int) else list(n_head),
        f"{arch}.attention.head_count_kv": n_head_kv if isinstance(n_head_kv, int) else list(n_head_kv),
        f"{arch}.context_length": ctx,
        **(extra or {}),
    }
    return GGUFHeader(
        version=3,
        metadata=meta,
        array_lengths={"tokenizer.ggml.tokens": n_vocab},
        tensors=tuple(tensors),
        alignment=32,
        data_offset=4096,
        header_bytes=4000,
        file_size=4096 + offset,
    )


def data_bytes(h: GGUFHeader) -> int:
    last = h.tensors[-1]
    return last.offset + last.n_bytes


def by_name(h: GGUFHeader, names: Sequence[str]) -> int:
    return sum(t.n_bytes for t in h.tensors if t.name in names)


def test_cpu_weights_are_the_mmapped_span() -> None:
    h = header()
    e = estimate(h, RunSettings(n_ctx=512), buffers=NONE)
    assert e.weights == e.cpu.weights == data_bytes(h)
    assert e.gpus == () and e.gpu_layers == 0


def test_repacked_matrices_get_a_second_copy() -> None:
    h = header(wtype=Q4_0, tied=True)
    plain = estimate(h, RunSettings(n_ctx=512), buffers=NONE).weights
    repacked = estimate(h, RunSettings(n_ctx=512), buffers=WeightBuffers(repack={Q4_0: 8})).weights
    matrices = [t for t in h.tensors if t.ggml_type == Q4_0 and t.name != "token_embd.weight"]
    embd = h.tensor("token_embd.weight")
    assert embd is not None
    # every layer matrix is repacked, and so is the tied output's copy of token_embd (a matmul, unlike get_rows)
    assert repacked - plain == sum(t.n_bytes for t in matrices) + embd.n_bytes
    # rows not a multiple of 8: not repacked
    odd = header(wtype=Q4_0, n_vocab=1001, tied=True)
    odd_plain = estimate(odd, RunSettings(n_ctx=512), buffers=NONE).weights
    odd_repacked = estimate(odd, RunSettings(n_ctx=512), buffers=WeightBuffers(repack={Q4_0: 8})).weights
    odd_matrices = [t for t in odd.tensors if t.ggml_type == Q4_0 and t.name != "token_embd.weight"]
    assert odd_repacked - odd_plain == sum(t.n_bytes for t in odd_matrices)


def test_offload_order_output_layer_first() -> None:
    h = header(n_layer=4)
    s = RunSettings(n_ctx=512)
    one = estimate(h, s, gpu_layers=1, gpu_split=[1.0], buffers=NONE)
    assert one.gpu_layers == 1
    gpu_names = ("output.weight", "output_norm.weight")
    assert one.gpus[0].weights == sum(-(-t.n_bytes // 128) * 128 for t in h.tensors if t.name in gpu_names)
    two = estimate(h, s, gpu_layers=2, gpu_split=[1.0], buffers=NONE)
    layer3 = [t for t in h.tensors if t.name.startswith("blk.3.")]
    assert two.gpus[0].weights - one.gpus[0].weights == sum(-(-t.n_bytes // 128) * 128 for t in layer3)
    # KV of offloaded layers moves with them
    assert two.gpus[0].kv_cache * 3 == two.cpu.kv_cache
    everything = estimate(h, s, gpu_layers=99, gpu_split=[1.0], buffers=NONE)
    assert everything.gpu_layers == 5 and everything.cpu.kv_cache == 0
    embd = h.tensor("token_embd.weight")
    assert embd is not None and everything.cpu.weights == embd.n_bytes  # the input layer stays on the CPU


def test_tied_embeddings_are_copied_to_the_output_device() -> None:
    h = header(tied=True)
    e = estimate(h, RunSettings(n_ctx=512), gpu_layers=1, gpu_split=[1.0], buffers=NONE)
    embd = h.tensor("token_embd.weight")
    assert embd is not None
    assert e.gpus[0].weights == -(-embd.n_bytes // 128) * 128 + 256 * 4  # the copy + output_norm


def test_cuda_pads_quantised_rows() -> None:
    h = header(wtype=Q8_0, n_embd=256)
    e = estimate(h, RunSettings(n_ctx=512), gpu_layers=1, gpu_split=[1.0], buffers=NONE)
    out = h.tensor("output.weight")
    assert out is not None
    padded = out.n_bytes + row_bytes(Q8_0, 512 - 256)
    assert e.gpus[0].weights == -(-padded // 128) * 128 + 256 * 4


def test_layers_split_over_gpus_by_free_memory() -> None:
    h = header(n_layer=4)
    e = estimate(h, RunSettings(n_ctx=512), gpu_layers=5, gpu_split=[3.0, 1.0], buffers=NONE)
    # llama.cpp: layer i goes to the first GPU whose cumulative share exceeds i / 5 (shares 0.75, 1.0)
    assert e.gpus[0].kv_cache == e.kv_cache and e.gpus[1].kv_cache == 0
    out = h.tensor("output.weight")
    assert out is not None and e.gpus[1].weights == -(-out.n_bytes // 128) * 128 + 256 * 4
    even = estimate(h, RunSettings(n_ctx=512), gpu_layers=5, gpu_split=[1.0, 1.0], buffers=NONE)
    assert even.gpus[0].kv_cache == even.kv_cache * 3 // 4  # layers 0-2 (0, 0.2, 0.4 < 0.5), then 3 and output


@pytest.mark.parametrize(("cache", "size"), [("f16", 2.0), ("q8_0", 34 / 32), ("q4_0", 18 / 32)])
def test_kv_cache_gqa(cache: str, size: float) -> None:
    h = header(n_layer=4, n_embd=256, n_head=8, n_head_kv=2)
    e = estimate(h, RunSettings(n_ctx=1000, cache_type=cache), buffers=NONE)
    assert e.n_ctx == 1000 and e.n_ctx_padded == 1024
    assert e.kv_cache == int(4 * 2 * (2 * 32) * size * 1024)


def test_per_layer_kv_heads_pad_v_without_flash_attention() -> None:
    h = header(n_layer=3, n_embd=256, n_head=[4, 4, 8], n_head_kv=[1, 2, 4])
    hd = 64
    k = sum(kv * hd * 2 for kv in (1, 2, 4)) * 512
    f16 = estimate(h, RunSettings(n_ctx=512), buffers=NONE)
    assert f16.kv_cache == k + 3 * (4 * hd * 2) * 512  # V rows padded to the widest layer
    fa = estimate(h, RunSettings(n_ctx=512, flash_attn="on"), buffers=NONE)
    assert fa.kv_cache == 2 * k


def test_sliding_window_layers() -> None:
    extra: dict[str, Value] = {"gemma2.attention.sliding_window": 1024}
    h = header(arch="gemma2", n_layer=4, n_head=4, n_head_kv=2, extra=extra, tied=True)
    shape = shape_of(h)
    assert [layer.swa for layer in shape.layers] == [True, False, True, False]
    full = estimate(h, RunSettings(n_ctx=8192), buffers=NONE)
    window = estimate(h, RunSettings(n_ctx=8192, swa_full=False), buffers=NONE)
    per_cell = 2 * 64 * 2 * 2  # kv heads x head dim x (K + V) x f16
    assert full.kv_cache == 4 * per_cell * 8192
    assert kv_cells(shape, RunSettings(n_ctx=8192, swa_full=False), 8192) == (8192, 1536)  # pad256(1024 + 512)
    assert window.kv_cache == 2 * per_cell * 8192 + 2 * per_cell * 1536


def test_sliding_window_layers_use_the_cache_type() -> None:
    """The window layers' cache is quantised like the others: llama.cpp kept it in f16 for a day (PR 21277) and
    reverted that (PR 21332); the bundled build quantises both caches (CPU gemma2 rows of docs/fit_accuracy.md)."""
    extra: dict[str, Value] = {"gemma2.attention.sliding_window": 1024}
    h = header(arch="gemma2", n_layer=4, n_head=4, n_head_kv=2, extra=extra, tied=True)
    settings = RunSettings(n_ctx=8192, swa_full=False, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on")
    row = row_bytes(Q8_0, 2 * 64)  # one cell of one layer's K (or V): 2 kv heads x head dim 64, q8_0
    e = estimate(h, settings, buffers=NONE)
    assert e.kv_cache == 2 * 2 * row * 8192 + 2 * 2 * row * 1536
    assert e.kv_cache < estimate(h, replace(settings, cache_type_k="f16", cache_type_v="f16"), buffers=NONE).kv_cache


def test_mla_keeps_k_only() -> None:
    extra: dict[str, Value] = {
        "deepseek2.attention.key_length": 576,
        "deepseek2.attention.value_length": 512,
        "deepseek2.attention.key_length_mla": 192,
        "deepseek2.attention.value_length_mla": 128,
    }
    h = header(arch="deepseek2", n_layer=2, n_head=16, n_head_kv=1, extra=extra)
    e = estimate(h, RunSettings(n_ctx=4096), buffers=NONE)
    assert e.kv_cache == 2 * 576 * 2 * 4096


def test_recurrent_state() -> None:
    extra: dict[str, Value] = {
        "mamba.ssm.conv_kernel": 4,
        "mamba.ssm.inner_size": 512,
        "mamba.ssm.state_size": 16,
        "mamba.ssm.group_count": 0,
    }
    h = header(arch="mamba", n_layer=2, n_head=0, n_head_kv=0, extra=extra)
    e = estimate(h, RunSettings(n_ctx=4096), buffers=NONE)
    assert e.kv_cache == 2 * (3 * 512 + 16 * 512) * 4  # f32 conv + ssm state, one sequence, no context term


def test_output_and_host_memory() -> None:
    h = header(n_vocab=32000)
    s = RunSettings(n_ctx=4096)
    e = estimate(h, s, buffers=NONE)
    assert e.output == 32000 * 4
    assert e.host_extra >= 512 * 32000 * 4  # llama-cpp-python's scores array
    assert e.total == e.weights + e.kv_cache + e.compute + e.output + e.host_extra


def test_default_context_is_capped() -> None:
    assert estimate(header(ctx=131072), RunSettings(), buffers=NONE).n_ctx == 4096
    assert estimate(header(ctx=2048), RunSettings(), buffers=NONE).n_ctx == 2048
    assert estimate(header(ctx=2048), RunSettings(n_ctx=100), buffers=NONE).n_ctx_padded == 256


def test_compute_grows_with_context_and_covers_the_logits() -> None:
    shape = shape_of(header(n_vocab=32000))
    sizes = [compute_buffer(shape, RunSettings(n_ctx=c), c)[0] for c in (512, 2048, 8192, 32768)]
    assert sizes == sorted(sizes) and sizes[0] >= 32000 * 512 * 4
    assert sizes[-1] >= 32768 * 512 * 8 * 4  # the attention scores of 8 heads over the whole cache
    fa = compute_buffer(shape, RunSettings(n_ctx=32768, flash_attn="on"), 32768)[0]
    assert fa < sizes[-1]


def test_missing_hyper_parameters_are_a_gguf_error() -> None:
    h = header()
    broken = GGUFHeader(
        version=3,
        metadata={"general.architecture": "llama"},
        array_lengths={},
        tensors=h.tensors,
        alignment=32,
        data_offset=0,
        header_bytes=0,
    )
    with pytest.raises(GGUFError, match="block_count"):
        estimate(broken, RunSettings(), buffers=NONE)


def test_settings_validate_and_describe_the_load() -> None:
    with pytest.raises(ValueError, match="cache type"):
        RunSettings(cache_type="q6_k")  # llama.cpp takes f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1
    with pytest.raises(ValueError, match="cache type"):
        RunSettings(cache_type_v="q3_k")
    with pytest.raises(ValueError, match="flash attention"):
        RunSettings(flash_attn="maybe")
    with pytest.raises(ValueError, match="split mode"):
        RunSettings(split_mode="tensor")
    split = RunSettings(cache_type_k="q5_1", cache_type_v="iq4_nl").llama_kwargs(n_ctx=512, gpu_layers=0)
    assert (split["type_k"], split["type_v"], split["flash_attn"]) == (7, 20, True)
    assert RunSettings(cache_type_k="q8_0").llama_kwargs(n_ctx=512, gpu_layers=0)["flash_attn"] is False
    kwargs = RunSettings(cache_type="q8_0").llama_kwargs(n_ctx=2048, gpu_layers=3)
    assert kwargs["type_k"] == kwargs["type_v"] == 8 and kwargs["flash_attn"] is True
    assert kwargs["n_ctx"] == 2048 and kwargs["n_gpu_layers"] == 3 and kwargs["swa_full"] is True
    assert RunSettings().llama_kwargs(n_ctx=512, gpu_layers=0)["flash_attn"] is False
