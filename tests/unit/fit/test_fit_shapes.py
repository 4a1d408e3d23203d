"""What a GGUF header means: the shape, quantisation and parameter count derived from what the file says."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from modelctl.fit.shapes import parameter_count, quantization, shape_of
from modelctl.gguf import FileSource, GGUFHeader, TensorInfo, read_header


def write(path: Path, *, n_vocab: int = 2000) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv([2, 1, 2])
    w.add_sliding_window(512)
    w.add_file_type(7)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    q8 = gguf.GGMLQuantizationType.Q8_0
    embd = gguf.quants.quantize(np.zeros((n_vocab, 64), dtype=np.float32), q8)
    w.add_tensor("token_embd.weight", embd, raw_dtype=q8)
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_shape_of_what_the_gguf_package_writes(tmp_path: Path) -> None:
    h = read_header(FileSource(write(tmp_path / "m.gguf")))
    s = shape_of(h)
    assert (s.arch, s.n_layer, s.n_embd, s.layers[0].n_head) == ("llama", 3, 64, 4)
    assert [layer.n_head_kv for layer in s.layers] == [2, 1, 2] and s.layers[0].n_head_kv == 2
    assert s.layers[0].k_len == s.layers[0].v_len == 16  # n_embd / n_head
    assert (s.n_ctx_train, s.n_swa, s.n_vocab) == (4096, 512, 2000)  # n_vocab: the skipped tokens, counted
    assert quantization(h) == "Q8_0"
    assert parameter_count(h) == 2000 * 64 + 64 * 64 + 64


def test_real_model_shape(smollm2_gguf: Path) -> None:
    h = read_header(FileSource(smollm2_gguf))
    s = shape_of(h)
    assert (s.arch, s.n_layer, s.n_embd, s.layers[0].n_head, s.layers[0].n_head_kv) == ("llama", 30, 576, 9, 3)
    assert s.n_vocab == 49152 and s.n_ctx_train == 8192
    assert (s.layers[0].k_len, s.layers[0].v_len, s.n_swa) == (64, 64, 0)
    assert s.tied_embeddings  # SmolLM2 has no output.weight
    assert quantization(h) == "Q4_1"
    assert 130e6 < parameter_count(h) < 140e6


def test_quantization_without_file_type_is_the_commonest_weight_type() -> None:
    a = TensorInfo("a", (32, 4), 8, 0, 4 * 34)  # Q8_0
    b = TensorInfo("b", (32, 64), 1, 160, 32 * 64 * 2)  # F16
    h = GGUFHeader(
        version=3,
        metadata={"general.architecture": "llama"},
        array_lengths={},
        tensors=(a, b),
        alignment=32,
        data_offset=4096,
        header_bytes=4096,
    )
    assert quantization(h) == "F16"
