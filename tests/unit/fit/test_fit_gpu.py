"""The estimate on GPUs: placement over several GPUs, the split knobs, experts kept on the host, per-backend
allocation rules, pipeline copies, flash attention's ``auto``; and the planned machines of ``fit --gpu``."""

from __future__ import annotations

import pytest

from modelctl.cpu import WeightBuffers
from modelctl.fit.devices import Device, parse_size, planned
from modelctl.fit.estimate import FLASH_HEAD_SIZES, estimate, resolve_flash_attn
from modelctl.fit.report import fit_headers
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import shape_of
from modelctl.gguf import GGUFHeader, TensorInfo, Value, row_bytes

F32, F16, Q4_0, Q8_0, Q4_K = 0, 1, 2, 8, 12
MIB, GIB = 1 << 20, 1 << 30
NONE = WeightBuffers(setting="none")


def moe_header(
    *, n_layer: int = 8, n_embd: int = 512, n_expert: int = 8, n_ff_exp: int = 256, head: int = 64
) -> GGUFHeader:
    """A qwen3moe-style header: attention plus routed experts (``ffn_*_exps``) in every layer, Q8_0 matrices."""
    n_vocab, n_head, n_head_kv = 2000, 8, 2
    shapes: list[tuple[str, tuple[int, ...], int]] = [("token_embd.weight", (n_embd, n_vocab), Q8_0)]
    for i in range(n_layer):
        b = f"blk.{i}."
        shapes += [
            (b + "attn_norm.weight", (n_embd,), F32),
            (b + "attn_q.weight", (n_embd, n_head * head), Q8_0),
            (b + "attn_k.weight", (n_embd, n_head_kv * head), Q8_0),
            (b + "attn_v.weight", (n_embd, n_head_kv * head), Q8_0),
            (b + "attn_output.weight", (n_head * head, n_embd), Q8_0),
            (b + "ffn_norm.weight", (n_embd,), F32),
            (b + "ffn_gate_inp.weight", (n_embd, n_expert), F32),
            (b + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), Q8_0),
            (b + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), Q8_0),
            (b + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), Q8_0),
        ]
    shapes += [("output_norm.weight", (n_embd,), F32), ("output.weight", (n_embd, n_vocab), Q8_0)]
    tensors, offset = [], 0
    for name, dims, t in shapes:
        rows = 1
        for d in dims[1:]:
            rows *= d
        n = row_bytes(t, dims[0]) * rows
        tensors.append(TensorInfo(name, dims, t, offset, n))
        offset += -(-n // 32) * 32
    a = "qwen3moe"
    meta: dict[str, Value] = {
        "general.architecture": a,
        f"{a}.block_count": n_layer,
        f"{a}.context_length": 32768,
        f"{a}.embedding_length": n_embd,
        f"{a}.feed_forward_length": 0,
        f"{a}.expert_feed_forward_length": n_ff_exp,
        f"{a}.expert_count": n_expert,
        f"{a}.expert_used_count": 2,
        f"{a}.attention.head_count": n_head,
        f"{a}.attention.head_count_kv": n_head_kv,
        f"{a}.attention.key_length": head,
        f"{a}.attention.value_length": head,
    }
    return GGUFHeader(
        version=3,
        metadata=meta,
        array_lengths={"tokenizer.ggml.tokens": n_vocab},
        tensors=tuple(tensors),
        alignment=32,
        data_offset=1 << 20,
        header_bytes=1 << 20,
        file_size=(1 << 20) + offset,
    )


def test_sizes_and_planned_machines() -> None:
    assert parse_size("24GiB") == parse_size("24576MiB") == parse_size("24G") == 24 * GIB
    assert parse_size("24GB") == 24 * 10**9 and parse_size("512") == 512 and parse_size("1.5 GiB") == 3 * GIB // 2
    for bad in ("", "GiB", "-1GiB", "24XB", "24 PiB"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)
    ram = Device(name="RAM", kind="cpu", total=64 * GIB, free=64 * GIB)
    assert [d.name for d in planned([24 * GIB, 24 * GIB], "cuda", ram)] == ["CUDA0", "CUDA1", "RAM"]
    assert [d.name for d in planned([16 * GIB], "rocm", ram)] == ["ROCm0", "RAM"]
    assert [d.name for d in planned([8 * GIB, 8 * GIB], "vulkan", ram)][:2] == ["Vulkan0", "Vulkan1"]
    assert planned([48 * GIB], "metal", ram)[0].name == "MTL0"
    with pytest.raises(ValueError, match="one GPU"):
        planned([8 * GIB, 8 * GIB], "metal", ram)
    with pytest.raises(ValueError, match="backend"):
        planned([8 * GIB], "opencl", ram)


def _layers_on(est_gpu_weights: list[int], per_layer: int) -> list[int]:
    return [round(w / per_layer) for w in est_gpu_weights]


def test_layers_split_by_free_memory_then_by_tensor_split() -> None:
    h = moe_header(n_layer=8)
    s = RunSettings(n_ctx=1024)
    per_layer = estimate(h, s, buffers=NONE).cpu.kv_cache // 8
    even = estimate(h, s, gpu_layers=-1, gpu_split=[1.0, 1.0], buffers=NONE)
    kv = [g.kv_cache for g in even.gpus]
    # llama.cpp's split points over the 9 offloaded layers (8 blocks and the output): layer i goes to the first GPU
    # whose cumulative share exceeds i / 9, so halves give blocks 0-4 and blocks 5-7 with the output layer
    assert kv == [5 * per_layer, 3 * per_layer] and even.cpu.kv_cache == 0
    skewed = estimate(
        h, RunSettings(n_ctx=1024, tensor_split=(3.0, 1.0)), gpu_layers=-1, gpu_split=[1, 1], buffers=NONE
    )
    assert [g.kv_cache for g in skewed.gpus] == [7 * per_layer, 1 * per_layer]
    by_free = estimate(h, s, gpu_layers=-1, gpu_split=[3.0, 1.0], buffers=NONE)
    assert [g.kv_cache for g in by_free.gpus] == [g.kv_cache for g in skewed.gpus]
    alone = estimate(h, RunSettings(n_ctx=1024, split_mode="none"), gpu_layers=-1, gpu_split=[1, 1], buffers=NONE)
    assert alone.gpus[1].total == 0 and alone.gpus[0].kv_cache == sum(kv)
    rows = estimate(h, RunSettings(n_ctx=1024, split_mode="row"), gpu_layers=-1, gpu_split=[1, 1], buffers=NONE)
    assert abs(rows.gpus[0].weights - rows.gpus[1].weights) < 0.2 * rows.gpus[0].weights
    assert sum(g.weights for g in rows.gpus) == pytest.approx(sum(g.weights for g in even.gpus), rel=0.01)


def test_n_cpu_moe_keeps_the_experts_of_the_first_layers_on_the_host() -> None:
    h = moe_header(n_layer=8)
    experts = [t for t in h.tensors if "_exps" in t.name and t.name.startswith(("blk.0.", "blk.1."))]
    full = estimate(h, RunSettings(n_ctx=1024), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    kept = estimate(h, RunSettings(n_ctx=1024, n_cpu_moe=2), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert full.gpus[0].weights - kept.gpus[0].weights >= sum(t.n_bytes for t in experts)  # GPU copies are padded
    # the host maps the file from its first tensor (token_embd) to the end of its last (blk.1's experts)
    assert kept.cpu.weights == max(t.offset + t.n_bytes for t in experts) - h.tensors[0].offset
    assert kept.gpus[0].kv_cache == full.gpus[0].kv_cache  # attention stays on the GPU


def test_backends_allocate_their_own_way() -> None:
    h = moe_header(n_layer=4, n_embd=320)  # 320-wide rows: CUDA pads each quantised row to 512 elements
    on = {
        b: estimate(h, RunSettings(n_ctx=512), gpu_layers=-1, gpu_split=[1.0], backend=b, buffers=NONE)
        for b in ("cuda", "rocm", "vulkan", "metal")
    }
    assert on["cuda"].gpus[0].weights == on["rocm"].gpus[0].weights > on["vulkan"].gpus[0].weights
    mapped = [t for t in h.tensors if not t.name.startswith("token_embd")]
    span = max(t.offset + t.n_bytes for t in mapped) - min(t.offset for t in mapped)
    assert on["metal"].gpus[0].weights == span  # Metal maps the file range of its tensors
    assert {e.gpus[0].kv_cache for e in on.values()} == {on["cuda"].gpus[0].kv_cache}


def test_cache_types_per_k_and_v_and_parallel_sequences() -> None:
    h = moe_header(n_layer=4)
    cells, width, layers = 4096, 2 * 64, 4
    f16 = estimate(h, RunSettings(n_ctx=cells, flash_attn="on"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert f16.gpus[0].kv_cache == layers * cells * width * 2 * 2
    mixed = RunSettings(n_ctx=cells, cache_type_k="q8_0", cache_type_v="q5_1", flash_attn="on")
    e = estimate(h, mixed, gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert e.gpus[0].kv_cache == layers * cells * (row_bytes(Q8_0, width) + row_bytes(7, width))
    four = estimate(h, RunSettings(n_ctx=cells, n_seq=4), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert four.cpu.output == 4 * estimate(h, RunSettings(n_ctx=cells), buffers=NONE).cpu.output


def test_pipeline_copies_when_several_gpus_hold_every_layer() -> None:
    h = moe_header(n_layer=8)
    s = RunSettings(n_ctx=2048)
    piped = estimate(h, s, gpu_layers=-1, gpu_split=[1.0, 1.0], buffers=NONE)
    partial = estimate(h, s, gpu_layers=8, gpu_split=[1.0, 1.0], buffers=NONE)  # one layer on the host
    overridden = estimate(h, RunSettings(n_ctx=2048, n_cpu_moe=1), gpu_layers=-1, gpu_split=[1, 1], buffers=NONE)
    single = estimate(h, s, gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert piped.cpu.compute > single.cpu.compute  # the host's inputs, once per stage
    assert piped.gpus[0].compute > overridden.gpus[0].compute
    assert partial.cpu.compute >= single.cpu.compute


def test_flash_attention_auto() -> None:
    shape = shape_of(moe_header(head=64))
    assert resolve_flash_attn(RunSettings(flash_attn="auto"), shape, "cuda").flash_attn == "on"
    odd = shape_of(moe_header(head=72))
    assert 72 not in FLASH_HEAD_SIZES
    assert resolve_flash_attn(RunSettings(flash_attn="auto"), odd, "cuda").flash_attn == "off"
    assert resolve_flash_attn(RunSettings(flash_attn="auto"), odd, "cpu").flash_attn == "on"
    assert resolve_flash_attn(RunSettings(flash_attn="off"), shape, "cuda").flash_attn == "off"
    h = moe_header(head=64)
    on = estimate(h, RunSettings(n_ctx=8192, flash_attn="on"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    auto = estimate(h, RunSettings(n_ctx=8192, flash_attn="auto"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    off = estimate(h, RunSettings(n_ctx=8192, flash_attn="off"), gpu_layers=-1, gpu_split=[1.0], buffers=NONE)
    assert auto.gpus[0] == on.gpus[0] and off.gpus[0].compute > on.gpus[0].compute


def test_a_gpu_backend_means_no_cpu_weight_copies() -> None:
    h = moe_header(n_layer=4)
    repack = WeightBuffers(setting="all", repack={Q8_0: 4})
    cpu_only = estimate(h, RunSettings(n_ctx=512), buffers=repack)
    with_gpu = estimate(h, RunSettings(n_ctx=512), gpu_layers=0, gpu_split=[1.0], buffers=repack)
    assert with_gpu.cpu.weights == estimate(h, RunSettings(n_ctx=512), buffers=NONE).cpu.weights
    assert with_gpu.cpu.weights <= cpu_only.cpu.weights


def test_json_per_device_for_a_planned_machine() -> None:
    ram = Device(name="RAM", kind="cpu", total=64 * GIB, free=64 * GIB)
    report = fit_headers([moe_header()], RunSettings(n_ctx=4096), devices=planned([GIB, GIB], "rocm", ram))
    doc = report.to_json()
    assert [d["name"] for d in doc["devices"]] == ["ROCm0", "ROCm1", "RAM"]
    for d in doc["devices"]:
        assert set(d["buffers"]) == {"weights", "kv_cache", "compute", "output", "overhead"}
        assert d["need"] == sum(d["buffers"].values()) and d["need"] <= d["free"]
    gpu0, _, host = doc["devices"]
    assert gpu0["buffers"]["overhead"] == 512 * MIB and host["buffers"]["output"] > 0 == gpu0["buffers"]["output"]
    assert doc["verdict"] == "fits" and doc["gpu_layers"] == 9
    total = sum(d["buffers"][k] for d in doc["devices"] for k in ("weights", "kv_cache", "compute", "output"))
    assert total + host["buffers"]["overhead"] == doc["memory"]["total"]
