"""Hostile GGUF headers: every generated input either parses or raises GGUFError, quickly and in bounded memory.

``MODELCTL_FUZZ_EXAMPLES`` sets how many inputs hypothesis generates (default 2,000, derandomized: the same every
run; see ``helpers.fuzz``, shared with the other parsers' property tests). Each example mutates a valid header
(truncations, flipped bytes, huge counts and lengths planted exactly where the format keeps them, wrong value
types, inserted and deleted bytes) and parses it from memory, the heap traced (under 100 MiB).
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from typing import Any

import pytest
from helpers.fuzz import FUZZ, Peak
from hypothesis import given
from hypothesis import strategies as st

from modelctl.cpu import WeightBuffers
from modelctl.errors import GGUFError
from modelctl.fit.estimate import estimate
from modelctl.fit.settings import RunSettings
from modelctl.fit.shapes import parameter_count, quantization, shape_of
from modelctl.gguf import GGUFHeader, read_header

NO_EXTRA = WeightBuffers(setting="none")

class Bytes:
    """An in-memory ByteSource."""

    def __init__(self, data: bytes, *, known_size: bool = True) -> None:
        self.data = data
        self.size = len(data) if known_size else None

    def read_at(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class Seed:
    """A small valid header, with the offsets of every count, length and type field in it."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.counts: list[int] = []  # u64 fields: string lengths, array counts, tensor/kv counts, dims, offsets
        self.types: list[int] = []  # u32 fields: value types, element types, n_dims, ggml types

    def u32(self, v: int, *, is_type: bool = False) -> None:
        if is_type:
            self.types.append(len(self.buf))
        self.buf += struct.pack("<I", v)

    def u64(self, v: int) -> None:
        self.counts.append(len(self.buf))
        self.buf += struct.pack("<Q", v)

    def string(self, s: str) -> None:
        raw = s.encode()
        self.u64(len(raw))
        self.buf += raw

    def kv(self, key: str, vtype: int, payload: bytes) -> None:
        self.string(key)
        self.u32(vtype, is_type=True)
        self.buf += payload


def build_seed() -> Seed:
    s = Seed()
    s.buf += b"GGUF"
    s.u32(3)
    s.u64(2)  # tensors
    s.u64(9)  # metadata entries
    s.kv("general.architecture", 8, b"")
    s.string("llama")
    s.kv("general.alignment", 4, struct.pack("<I", 32))
    s.kv("llama.block_count", 4, struct.pack("<I", 2))
    s.kv("llama.embedding_length", 4, struct.pack("<I", 32))
    s.kv("llama.attention.head_count", 4, struct.pack("<I", 4))
    s.kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0))
    s.kv("tokenizer.ggml.add_bos_token", 7, b"\x01")
    s.string("llama.attention.head_count_kv")
    s.u32(9, is_type=True)
    s.u32(5, is_type=True)
    s.u64(2)
    s.buf += struct.pack("<ii", 2, 1)
    s.string("tokenizer.ggml.tokens")
    s.u32(9, is_type=True)
    s.u32(8, is_type=True)
    s.u64(3)
    for token in ("<s>", "a", "b"):
        s.string(token)
    for name, dims, ggml_type, offset in (("token_embd.weight", (32, 3), 8, 0), ("output_norm.weight", (32,), 0, 128)):
        s.string(name)
        s.u32(len(dims), is_type=True)
        for d in dims:
            s.u64(d)
        s.u32(ggml_type, is_type=True)
        s.u64(offset)
    return s


SEED = build_seed()
VALID = bytes(SEED.buf)
HUGE = [2**63, 2**64 - 1, 2**62 + 1, 2**40, 2**32, 2**31, 2**27 + 1, 2**20 + 1, 65536, 1 << 16 + 1]


def parse(data: bytes, *, known_size: bool = True) -> GGUFHeader:
    return read_header(Bytes(data, known_size=known_size))


def test_the_seed_is_valid() -> None:
    header = parse(VALID + bytes(512))
    assert header.architecture == "llama"
    assert shape_of(header).n_vocab == 3
    assert [layer.n_head_kv for layer in shape_of(header).layers] == [2, 1]
    assert header.tensors[0].n_bytes == 3 * 34
    assert header.metadata["tokenizer.ggml.add_bos_token"] is True
    assert estimate(header, RunSettings(n_ctx=512), buffers=NO_EXTRA).kv_cache == (3 * 8 + 2 * 16) * 2 * 512  # V padded


_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(VALID))),
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("count"), st.sampled_from(SEED.counts), st.sampled_from(HUGE) | st.integers(0, 2**64 - 1)),
    st.tuples(st.just("type"), st.sampled_from(SEED.types), st.integers(0, 40) | st.integers(0, 2**32 - 1)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID)), st.integers(1, 16)),
)


def mutate(mutations: list[tuple[Any, ...]]) -> bytes:
    data = bytearray(VALID + bytes(512))  # room for the tensor data, so that valid mutations stay valid
    for m in mutations:
        kind, at = m[0], int(m[1])
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= int(m[2])
        elif kind == "count" and at + 8 <= len(data):
            data[at : at + 8] = struct.pack("<Q", int(m[2]))
        elif kind == "type" and at + 4 <= len(data):
            data[at : at + 4] = struct.pack("<I", int(m[2]))
        elif kind == "insert":
            data[at:at] = bytes(m[2])
        elif kind == "delete":
            del data[at : at + int(m[2])]
    return bytes(data)


def accessors(header: GGUFHeader) -> None:
    """Every accessor of a parsed header, and what is derived from it, answers or raises GGUFError (hostile values
    parse fine)."""
    _ = header.architecture
    for key in ("block_count", "embedding_length", "context_length", "vocab_size", "attention.sliding_window"):
        header.arch_int(key)
    quantization(header)
    parameter_count(header)
    with contextlib.suppress(GGUFError):
        shape = shape_of(header)
        assert all(isinstance(v, int) for layer in shape.layers for v in (layer.n_head, layer.n_head_kv, layer.k_len))
    with contextlib.suppress(GGUFError):  # the estimator takes the same hostile values
        estimate(header, RunSettings(n_ctx=512), buffers=NO_EXTRA)


def test_mutated_headers_parse_or_raise_gguf_error() -> None:
    meter = Peak()

    @FUZZ
    @given(mutations=st.lists(_mutation, min_size=1, max_size=4), known_size=st.booleans())
    def check(mutations: list[tuple[Any, ...]], known_size: bool) -> None:
        data = mutate(mutations)
        try:
            header = meter.call(parse, data, known_size=known_size)
        except GGUFError as exc:
            assert str(exc)  # a message, one line
            assert "\n" not in str(exc)
        else:
            assert header.header_bytes <= len(data)
            assert len(header.tensors) <= 2
            accessors(header)

    check()
    meter.check()


def test_memory_stays_bounded_on_hostile_counts() -> None:
    """Huge counts in every count field, one at a time: nothing is allocated in proportion to them."""
    tracemalloc.start()
    try:
        for at in SEED.counts:
            for value in HUGE:
                data = bytearray(VALID)
                data[at : at + 8] = struct.pack("<Q", value)
                for known in (True, False):
                    with contextlib.suppress(GGUFError):
                        parse(bytes(data), known_size=known)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"GGML" + VALID[4:], "bad magic"),
        (b"GGUF" + struct.pack("<IQQ", 9, 0, 0), "unsupported GGUF version 9"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0), r"tensors \(limit"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), r"metadata entries \(limit"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**60), "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1000), "truncated"),
        (VALID[:-5], "truncated"),
    ],
)
def test_known_hostile_inputs(data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        parse(data)
