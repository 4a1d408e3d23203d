"""GPU loads as the bundled llama.cpp schedules them: a large batch's products run on the first GPU even for layers
kept on the host (their weights copied in), the host holds the graph inputs (float32 masks, the KV writes' row
indices), flash attention's ``auto`` follows the KV cache's device, and sliding-window caches per stream."""

from __future__ import annotations

from dataclasses import replace

from unit.fit.test_fit_gpu import moe_header  # tests/ is on sys.path

from modelctl.cpu import WeightBuffers
from modelctl.fit.estimate import estimate, kv_cells, resolve_flash_attn
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import shape_of

NONE = WeightBuffers(setting="none")
MIB = 1 << 20


def test_the_host_holds_float32_masks_and_the_kv_row_indices() -> None:
    """``set_rows`` indexes one row per token for K and, without flash attention (V transposed), one per value."""
    h = moe_header(n_layer=4, n_embd=512)  # 2 KV heads of 64: a V row of 128 values
    cells, t = 1024, 512
    off = estimate(h, RunSettings(n_ctx=cells, flash_attn="off"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    on = estimate(h, RunSettings(n_ctx=cells, flash_attn="on"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    e_t, mask = 512 * t * 4, cells * t * 4  # the mask stays float32 on the host either way
    assert on.cpu.compute == e_t + mask + 6 * t * 4 + t * 8 * 2
    assert off.cpu.compute == e_t + mask + 6 * t * 4 + t * 8 * (1 + 128)


def test_layers_left_on_the_host_run_their_large_batch_on_the_first_gpu() -> None:
    """With no layer offloaded, CUDA still runs the batch's products, the output matrix copied in beside the logits
    (a ROCm load of Qwen3-14B printed exactly that: ROCm/ROCm issue 5104); Metal leaves them to the CPU."""
    h = moe_header(n_layer=4, n_embd=512)
    s = RunSettings(n_ctx=1024, flash_attn="on")
    cuda = estimate(h, s, gpu_layers=0, gpu_split=[1.0, 1.0], buffers=NONE)
    output = next(t for t in h.tensors if t.name == "output.weight")
    logits = 2000 * 512 * 4
    assert cuda.gpus[0].compute >= output.n_bytes + logits and cuda.gpus[1].compute == 0
    assert cuda.cpu.compute < cuda.gpus[0].compute // 4  # the host keeps the inputs
    metal = estimate(h, s, gpu_layers=0, gpu_split=[1.0], buffers=NONE, backend="metal")
    assert metal.gpus[0].compute == 0 and metal.cpu.compute > cuda.cpu.compute


def test_auto_flash_attention_is_off_when_the_kv_cache_stays_on_the_host() -> None:
    shape = shape_of(moe_header(head=64))
    assert resolve_flash_attn(RunSettings(flash_attn="auto"), shape, "cuda").flash_attn == "on"
    no_offload = RunSettings(flash_attn="auto", offload_kqv=False)
    assert resolve_flash_attn(no_offload, shape, "cuda").flash_attn == "off"
    assert resolve_flash_attn(no_offload, shape, "cpu").flash_attn == "on"


def test_sliding_window_cells_per_stream() -> None:
    """A unified cache keeps one window per sequence in one stream; separate streams each keep their own."""
    shape = shape_of(moe_header())
    swa = replace(shape, layers=tuple(replace(layer, swa=True) for layer in shape.layers), n_swa=1024)
    unified = RunSettings(n_ctx=8192, n_seq=4, kv_unified=True, swa_full=False)
    assert kv_cells(swa, unified, 8192) == (8192, 4608)  # pad256(1024 * 4 + 512)
    separate = RunSettings(n_ctx=8192, n_seq=4, kv_unified=False, swa_full=False)
    assert kv_cells(swa, separate, 8192) == (8192, 4 * 1536)  # 4 streams of pad256(min(2048, 1024 + 512))
    assert kv_cells(swa, RunSettings(n_ctx=1024, n_seq=3), 1024)[0] == 1536  # 3 streams of pad256(341)
    assert kv_cells(swa, RunSettings(n_ctx=1024, n_seq=3, kv_unified=True), 1024)[0] == 1024


def test_a_tensor_override_keeps_its_matrix_on_the_host_and_the_gpu_copies_it_in() -> None:
    """``--override-tensor output.weight=CPU`` with every layer offloaded: the output matrix is host weights, and a
    large batch's output product runs on the GPU with the matrix copied into its compute buffer beside the logits
    and one hidden state (a b6182 Vulkan load of gpt-oss-20b printed exactly that sum)."""
    h = moe_header(n_layer=4, n_embd=1024)
    s = RunSettings(n_ctx=1024, n_batch=32, n_ubatch=32, flash_attn="on")  # 32 tokens: the offload threshold
    output = next(t for t in h.tensors if t.name == "output.weight")
    plain = estimate(h, s, gpu_layers=-1, gpu_split=[1.0], buffers=NONE, backend="vulkan")
    kept = estimate(h, s, gpu_layers=-1, gpu_split=[1.0], buffers=NONE, backend="vulkan", host_tensors=[r"^output\."])
    assert kept.gpus[0].weights == plain.gpus[0].weights - -(-output.n_bytes // 128) * 128
    # mapped: the host's buffer now spans the file from token_embd (first) to the output matrix (last)
    assert plain.cpu.weights < kept.cpu.weights == output.offset + output.n_bytes
    logits, e_t, idxs = 2000 * 32 * 4, 1024 * 32 * 4, 32 * 8 * 2  # idxs: the K and V row indices, copied in
    assert kept.gpus[0].compute == output.n_bytes + logits + e_t + idxs > plain.gpus[0].compute


def test_any_tensor_override_turns_pipeline_parallelism_off() -> None:
    """Two GPUs holding every layer pipeline the batch (four copies of each stage's input); an override stops it."""
    h = moe_header(n_layer=4, n_embd=512)
    s = RunSettings(n_ctx=1024, flash_attn="on")
    piped = estimate(h, s, gpu_layers=-1, gpu_split=[1.0, 1.0], buffers=NONE)
    kept = estimate(h, s, gpu_layers=-1, gpu_split=[1.0, 1.0], buffers=NONE, host_tensors=[r"^blk\.0\.ffn_up_exps"])
    e_t = 512 * 512 * 4
    assert piped.cpu.compute - kept.cpu.compute == 3 * e_t  # the host's batch embeddings: one per copy
