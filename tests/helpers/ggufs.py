"""Tiny but valid GGUF models written with the ``gguf`` package, split models as llama.cpp's gguf-split writes
them, and large GGUF-prefixed blobs for download tests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, Keys, TokenType
from gguf.quants import quantize

F32 = GGMLQuantizationType.F32


@dataclass(frozen=True, kw_only=True)
class LlamaShape:
    """Hyper-parameters of a llama-architecture model (small defaults: a few hundred KiB at F32)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    vocab: int = 256
    context_length: int = 2048
    tied_embeddings: bool = False


def _tensors(shape: LlamaShape, tensor_type: GGMLQuantizationType, seed: int) -> list[tuple[str, np.ndarray]]:
    """llama.cpp's tensor names and numpy shapes (rows, cols); weights in ``tensor_type``, norms in F32."""
    rng = np.random.default_rng(seed)
    head_dim = shape.n_embd // shape.n_head
    kv = shape.n_head_kv * head_dim

    def weight(rows: int, cols: int) -> np.ndarray:
        data = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
        return quantize(data, tensor_type)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out = [("token_embd.weight", weight(shape.vocab, shape.n_embd))]
    for i in range(shape.n_layer):
        out += [
            (f"blk.{i}.attn_norm.weight", norm(shape.n_embd)),
            (f"blk.{i}.attn_q.weight", weight(shape.n_embd, shape.n_embd)),
            (f"blk.{i}.attn_k.weight", weight(kv, shape.n_embd)),
            (f"blk.{i}.attn_v.weight", weight(kv, shape.n_embd)),
            (f"blk.{i}.attn_output.weight", weight(shape.n_embd, shape.n_embd)),
            (f"blk.{i}.ffn_norm.weight", norm(shape.n_embd)),
            (f"blk.{i}.ffn_gate.weight", weight(shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_up.weight", weight(shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_down.weight", weight(shape.n_embd, shape.n_ff)),
        ]
    out.append(("output_norm.weight", norm(shape.n_embd)))
    if not shape.tied_embeddings:
        out.append(("output.weight", weight(shape.vocab, shape.n_embd)))
    return out


def _add_metadata(writer: GGUFWriter, shape: LlamaShape, name: str, file_type: int) -> None:
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.vocab)
    tokens = ["<unk>", "<s>", "</s>", *(f"t{i}" for i in range(3, shape.vocab))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.NORMAL] * (shape.vocab - 3)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * shape.vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


# llama.cpp's LLAMA_FTYPE numbers for the types we write (the general.file_type key).
_FILE_TYPES = {
    GGMLQuantizationType.F32: 0,
    GGMLQuantizationType.F16: 1,
    GGMLQuantizationType.Q4_0: 2,
    GGMLQuantizationType.Q4_1: 3,
    GGMLQuantizationType.Q8_0: 7,
    GGMLQuantizationType.Q5_0: 8,
    GGMLQuantizationType.Q5_1: 9,
    GGMLQuantizationType.BF16: 32,
}


def _write(
    path: Path,
    arch: str,
    kv: bool,
    tensors: Sequence[tuple[str, np.ndarray]],
    extra: dict[str, int],
    shape: LlamaShape,
    name: str,
    tensor_type: GGMLQuantizationType,
) -> None:
    writer = GGUFWriter(path, arch)
    if kv:
        _add_metadata(writer, shape, name, _FILE_TYPES.get(tensor_type, 0))
    else:  # gguf-split: shards after the first carry only the split.* keys
        writer.kv_data[0].clear()
    if "no" in extra:
        writer.add_uint16(Keys.Split.LLM_KV_SPLIT_NO, extra["no"])
        writer.add_uint16(Keys.Split.LLM_KV_SPLIT_COUNT, extra["count"])
        writer.add_int32(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, extra["tensors"])
    for tensor_name, data in tensors:
        raw = tensor_type if data.dtype == np.uint8 else None
        writer.add_tensor(tensor_name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_llama(
    path: Path,
    *,
    shape: LlamaShape | None = None,
    tensor_type: GGMLQuantizationType = F32,
    name: str = "tiny-llama",
    seed: int = 0,
) -> Path:
    """Write one GGUF file holding a random llama model; return ``path``.

    Quantised types need ``n_embd``, ``n_ff`` multiples of the type's block size (32 for Q4_0/Q4_1/Q8_0).
    """
    shape = shape or LlamaShape()
    _write(path, "llama", True, _tensors(shape, tensor_type, seed), {}, shape, name, tensor_type)
    return path


def tiny_llama_split(
    directory: Path,
    count: int,
    *,
    prefix: str = "tiny-llama",
    shape: LlamaShape | None = None,
    tensor_type: GGMLQuantizationType = F32,
    seed: int = 0,
) -> list[Path]:
    """Write a split model as gguf-split does: ``<prefix>-00001-of-0000N.gguf`` ...; the first shard has all
    the metadata, every shard has ``split.no`` (u16), ``split.count`` (u16) and ``split.tensors.count`` (i32).
    Returns the shard paths in order."""
    shape = shape or LlamaShape()
    if count < 1:
        raise ValueError("count must be at least 1")
    tensors = _tensors(shape, tensor_type, seed)
    if count > len(tensors):
        raise ValueError(f"{len(tensors)} tensors cannot fill {count} shards")
    directory.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * len(tensors) / count) for i in range(count + 1)]
    paths = []
    for i in range(count):
        path = directory / f"{prefix}-{i + 1:05d}-of-{count:05d}.gguf"
        extra = {"no": i, "count": count, "tensors": len(tensors)}
        _write(path, "llama", i == 0, tensors[bounds[i] : bounds[i + 1]], extra, shape, prefix, tensor_type)
        paths.append(path)
    return paths


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def big_blob(path: Path, size: int, *, seed: bytes | None = None) -> str:
    """Write ``size`` bytes starting with ``GGUF`` (not a parseable model: a payload for transfer tests) and
    return its ``sha256:`` digest. Fast: one random 4 MiB block, each copy stamped with its index so that no
    two blocks are equal (a resumed download that puts bytes at the wrong offset fails the digest)."""
    block = bytearray(seed * ((4 << 20) // len(seed) + 1) if seed else os.urandom(4 << 20))[: 4 << 20]
    digest = hashlib.sha256()
    written = 0
    with path.open("wb") as f:
        index = 0
        while written < size:
            block[:8] = index.to_bytes(8, "little")
            if index == 0:
                block[:4] = b"GGUF"
            piece = memoryview(block)[: min(len(block), size - written)]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
            index += 1
    return f"sha256:{digest.hexdigest()}"


def small_gguf(
    path: Path, *, n_vocab: int = 2000, split: tuple[int, int] | None = None, tensors: bool = True
) -> Path:
    """A small llama header with per-layer KV heads, a sliding window and a token list (header-reader and shape
    tests); ``split`` makes it shard ``split[0]`` of ``split[1]``, ``tensors=False`` a header with no tensors."""
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv([2, 1, 2])
    w.add_sliding_window(512)
    w.add_file_type(7)
    w.add_chat_template("{{ messages }}")
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_token_scores([0.5] * n_vocab)
    if split:
        w.add_uint16("split.no", split[0])
        w.add_uint16("split.count", split[1])
    if tensors:
        q8 = GGMLQuantizationType.Q8_0
        suffix = "" if not split else str(split[0])
        embd = quantize(np.zeros((n_vocab, 64), dtype=np.float32), q8)
        w.add_tensor(f"token_embd.weight{suffix}", embd, raw_dtype=q8)
        w.add_tensor(f"blk.0.attn_q.weight{suffix}", np.zeros((64, 64), dtype=np.float16))
        w.add_tensor(f"output_norm.weight{suffix}", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def padded_gguf(path: Path, size: int, *, sparse: bool = False) -> Path:
    """A parseable GGUF (:func:`small_gguf`'s header and tensors) grown to ``size`` bytes with random bytes, or with a
    hole (``sparse``: no disk used, nothing to read), for tests that need a large model file fast."""
    small_gguf(path, n_vocab=200)
    if sparse:
        os.truncate(path, size)
        return path
    with path.open("ab") as f:
        left = size - path.stat().st_size
        while left > 0:
            f.write(os.urandom(min(left, 4 << 20)))
            left -= min(left, 4 << 20)
    return path

