"""The GGUF header reader: files written by the ``gguf`` package, ranged reads, split models, and a table of
malformed headers that must each fail with a clear GGUFError."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers.ggufs import small_gguf as write

from modelctl.errors import GGUFError
from modelctl.gguf import FileSource, RangedSource, merge, read_header, read_headers


def test_reads_what_the_gguf_package_writes(tmp_path: Path) -> None:
    path = write(tmp_path / "m.gguf")
    h = read_header(FileSource(path))
    assert h.version == 3
    assert h.architecture == "llama"
    assert h.get("tokenizer.chat_template") == "{{ messages }}"
    # the 2000 tokens and scores were counted, not kept
    assert "tokenizer.ggml.tokens" not in h.metadata and h.array_lengths["tokenizer.ggml.scores"] == 2000
    embd, q, norm = h.tensors
    assert embd.shape == (64, 2000) and embd.n_bytes == 2000 * 64 // 32 * 34 and embd.type_name == "Q8_0"
    assert q.n_bytes == 64 * 64 * 2 and norm.n_bytes == 64 * 4
    assert h.data_offset % h.alignment == 0 and h.data_offset >= h.header_bytes
    assert h.tensor("output_norm.weight") == norm and h.tensor("missing") is None
    assert path.stat().st_size == h.data_offset + norm.offset + norm.n_bytes


def test_asked_for_arrays_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "m.gguf")
    h = read_header(FileSource(path), want_arrays=frozenset({"tokenizer.ggml.tokens"}))
    tokens = h.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and tokens[:2] == ["t0", "t1"] and len(tokens) == 2000


def test_ranged_reads_grow_and_skip_what_is_not_needed(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list([f"t{i}" for i in range(50_000)])
    w.add_array("test.big", [0.0] * 600_000)  # 2.4 MB of f32, skipped unread
    w.add_block_count(1)
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    calls: list[tuple[int, int]] = []

    def open_range(start: int, end: int) -> bytes:
        calls.append((start, end))
        return data[start : end + 1]

    source = RangedSource(open_range, len(data))
    h = read_header(source)
    local = read_header(FileSource(path))
    assert (h.metadata, h.tensors, h.array_lengths) == (local.metadata, local.tensors, local.array_lengths)
    assert h.array_lengths["tokenizer.ggml.tokens"] == 50_000 and h.array_lengths["test.big"] == 600_000
    assert h.arch("block_count") == 1
    sizes = [end - start + 1 for start, end in calls]
    assert sizes[0] == 256 << 10
    assert source.bytes_fetched == h.bytes_fetched < h.header_bytes - (2 << 20)  # the array never came
    assert all(b[0] > a[1] for a, b in itertools.pairwise(calls))  # no byte fetched twice


def test_ranged_source_with_unknown_size_stops_at_the_end() -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    h = read_header(RangedSource(lambda s, e: data[s : e + 1], None))
    assert h.tensors == () and h.header_bytes == len(data)


def test_split_models_merge_in_order(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"m-0000{i + 1}-of-00002.gguf", split=(i, 2)) for i in range(2)]
    headers = read_headers([FileSource(p) for p in paths])
    merged = merge(headers)
    assert merged.n_files == 2 and len(merged.tensors) == 6
    assert [t.file for t in merged.tensors] == [0, 0, 0, 1, 1, 1]
    assert merged.data_offsets == (headers[0].data_offset, headers[1].data_offset)
    with pytest.raises(GGUFError, match="out of order"):
        merge(list(reversed(headers)))
    with pytest.raises(GGUFError, match=r"split\.count"):
        merge(headers[:1] + headers)
    with pytest.raises(GGUFError, match="1 GGUF file"):
        merge(headers[:1])
    single = read_header(FileSource(write(tmp_path / "single.gguf")))
    assert merge([single]) is single


def test_real_model_header(smollm2_gguf: Path) -> None:
    h = read_header(FileSource(smollm2_gguf))
    assert h.architecture == "llama"
    keys = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv")
    assert tuple(h.arch(k) for k in keys) == (30, 576, 9, 3)  # as the file stores them
    template = h.get("tokenizer.chat_template")
    assert isinstance(template, str) and "im_start" in template
    assert h.header_bytes < 2 << 20 and h.bytes_fetched < h.header_bytes  # token types skipped unread


# --- malformed headers, built byte by byte


class B:
    def __init__(self) -> None:
        self.kv: list[bytes] = []
        self.ti: list[bytes] = []

    @staticmethod
    def s(text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        return struct.pack("<Q", len(raw)) + raw

    def u32(self, key: str, value: int) -> B:
        self.kv.append(self.s(key) + struct.pack("<II", 4, value))
        return self

    def raw_kv(self, payload: bytes) -> B:
        self.kv.append(payload)
        return self

    def tensor(self, name: str | bytes, dims: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> B:
        info = self.s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        self.ti.append(info + struct.pack("<IQ", ggml_type, offset))
        return self

    def build(self, pad: int = 4096) -> bytes:
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.ti), len(self.kv))
        return head + b"".join(self.kv) + b"".join(self.ti) + bytes(pad)


def arch() -> B:
    return B().raw_kv(B.s("general.architecture") + struct.pack("<I", 8) + B.s("llama"))


BAD: list[tuple[str, Callable[[], bytes], str]] = [
    ("duplicate key", lambda: arch().u32("a", 1).u32("a", 2).build(), "duplicate GGUF metadata key 'a'"),
    ("unknown value type", lambda: arch().raw_kv(B.s("k") + struct.pack("<I", 13)).build(), "unknown value type 13"),
    (
        "nested array",
        lambda: arch().raw_kv(B.s("k") + struct.pack("<IIQ", 9, 9, 1)).build(),
        "nested arrays are not supported",
    ),
    (
        "huge array",
        lambda: arch().raw_kv(B.s("k") + struct.pack("<IIQ", 9, 0, 2**40)).build(),
        "has 1099511627776 items",
    ),
    ("not utf-8", lambda: arch().raw_kv(B.s(b"\xff\xfe") + struct.pack("<II", 4, 1)).build(), "not UTF-8"),
    ("bad alignment", lambda: arch().u32("general.alignment", 24).build(), "general.alignment 24"),
    ("zero alignment", lambda: arch().u32("general.alignment", 0).build(), "general.alignment 0"),
    ("no dims", lambda: arch().tensor("t", ()).build(), "0 dimensions"),
    ("five dims", lambda: arch().tensor("t", (1, 1, 1, 1, 1)).build(), "5 dimensions"),
    ("unknown type", lambda: arch().tensor("t", (32,), ggml_type=99).build(), "unknown ggml tensor type 99"),
    ("block size", lambda: arch().tensor("t", (33,), ggml_type=8).build(), "not a multiple of the Q8_0 block"),
    ("overflow", lambda: arch().tensor("t", (2**40, 2**40)).build(), "more elements than fit in 64 bits"),
    ("huge dim", lambda: arch().tensor("t", (2**63 + 1,)).build(), "dimension of"),
    ("misaligned", lambda: arch().tensor("t", (8,), offset=4).build(), "not aligned"),
    ("outside", lambda: arch().tensor("t", (8,), offset=1 << 20).build(), "lies outside the file"),
    (
        "duplicate tensor",
        lambda: arch().tensor("t", (8,)).tensor("t", (8,), offset=32).build(),
        "duplicate GGUF tensor",
    ),
    ("long name", lambda: arch().tensor("x" * 64, (8,)).build(), "64 bytes long"),
    ("long string", lambda: arch().raw_kv(B.s("k") + struct.pack("<IQ", 8, 2**21)).build(), "limit 1048576"),
]


@pytest.mark.parametrize(("name", "build", "message"), BAD, ids=[b[0] for b in BAD])
def test_malformed_headers_raise_a_clear_error(name: str, build: Callable[[], bytes], message: str) -> None:
    data = build()
    with pytest.raises(GGUFError, match=message.replace("(", r"\(")):
        read_header(RangedSource(lambda s, e: data[s : e + 1], len(data)))


def test_a_missing_file_is_a_gguf_error(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="cannot read"):
        FileSource(tmp_path / "absent.gguf")


@pytest.mark.parametrize("name", ["general.archi\ntecture", "a\rb\x1b[2J"])
def test_a_hostile_key_never_breaks_the_one_line_error(tmp_path: Path, name: str) -> None:
    """Found by the fuzzer: a truncated value after a key holding a newline gave a two-line error."""
    key = name.encode()
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + b"\x01"  # vtype cut short
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as caught:
        read_header(FileSource(path))
    assert str(caught.value).isprintable(), str(caught.value)
