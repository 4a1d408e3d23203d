"""What a GGUF header means: the shape, quantisation and parameter count derived from what the file says."""

from __future__ import annotations

from pathlib import Path

from helpers.ggufs import small_gguf as write

from modelctl.fit.shapes import parameter_count, quantization, shape_of
from modelctl.gguf import FileSource, GGUFHeader, TensorInfo, read_header


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
