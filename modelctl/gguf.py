"""A bounded GGUF header reader (metadata and tensor infos) over a local file or ranged HTTP reads.

Every count and length comes from the file and may be hostile: each is checked against limits and against the
bytes that remain, large arrays (tokenizer tokens, merges, scores) are skipped and only counted, and any problem
raises :class:`GGUFError` with one clear line. Memory stays bounded whatever the input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelctl.errors import GGUFError

MAX_STRING = 1 << 20
MAX_ARRAY = 1 << 27
MAX_KEEP_ARRAY = 1024
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_DIMS = 4
MAX_HEADER = 256 << 20

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9

# ggml type -> (block size, bytes per block); from the gguf package when available, with the common ones built in
_QUANT: dict[int, tuple[int, int]] = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 40),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    30: (1, 2),
}
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}


def _quant_sizes(ggml_type: int) -> tuple[int, int]:
    try:
        import gguf as _g

        sizes: dict[Any, tuple[int, int]] = _g.GGML_QUANT_SIZES
        return sizes[_g.GGMLQuantizationType(ggml_type)]
    except (ImportError, KeyError, ValueError):
        if ggml_type in _QUANT:
            return _QUANT[ggml_type]
        raise GGUFError(f"unknown ggml tensor type {ggml_type}", hint="the file may be newer than modelctl") from None


class ByteSource(Protocol):
    size: int | None

    def read_at(self, offset: int, size: int) -> bytes: ...


class RangedSource:
    """Reads through ``fetch(start, end_inclusive)`` in growing windows (256 KiB, doubling), counting bytes."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int | None) -> None:
        self._fetch = fetch
        self.size = size
        self.bytes_fetched = 0
        self._buf = b""
        self._window = 256 << 10

    def read_at(self, offset: int, size: int) -> bytes:
        end = offset + size
        while len(self._buf) < end:
            start = len(self._buf)
            stop = start + max(self._window, end - start)
            if self.size is not None:
                stop = min(stop, self.size)
            if stop <= start:
                break
            data = self._fetch(start, stop - 1)
            if not data:
                break
            self.bytes_fetched += len(data)
            self._buf += data
            self._window = min(self._window * 2, 16 << 20)
        return self._buf[offset:end]


class FileSource(RangedSource):
    """A local GGUF file, read through the same growing windows (one pread each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size

        def fetch(start: int, end: int) -> bytes:
            with path.open("rb") as f:
                f.seek(start)
                return f.read(end - start + 1)

        super().__init__(fetch, size)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(slots=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    header_bytes: int
    bytes_fetched: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def n_vocab(self) -> int:
        n = self.array_lengths.get("tokenizer.ggml.tokens")
        if n:
            return n
        vocab = self.arch("vocab_size")
        return int(vocab) if isinstance(vocab, int) else 0

    @property
    def quantization(self) -> str | None:
        ft = self.metadata.get("general.file_type")
        return _FILE_TYPES.get(ft) if isinstance(ft, int) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)


class _Cursor:
    def __init__(self, source: ByteSource) -> None:
        self.src = source
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > MAX_HEADER:
            raise GGUFError(f"GGUF header larger than {MAX_HEADER >> 20} MiB or corrupt")
        if self.src.size is not None and self.pos + n > self.src.size:
            raise GGUFError("truncated GGUF header: it claims more bytes than the file holds")
        data = self.src.read_at(self.pos, n)
        if len(data) != n:
            raise GGUFError("truncated GGUF header")
        self.pos += n
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        n = self.u64()
        if n > MAX_STRING:
            raise GGUFError(f"GGUF string of {n} bytes exceeds the {MAX_STRING} byte limit")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError("GGUF string is not UTF-8") from None

    def skip_string(self) -> None:
        n = self.u64()
        if n > MAX_STRING:
            raise GGUFError(f"GGUF string of {n} bytes exceeds the {MAX_STRING} byte limit")
        self.take(n)


def read_header(source: ByteSource) -> GGUFHeader:
    cur = _Cursor(source)
    if cur.take(4) != b"GGUF":
        raise GGUFError("not a GGUF file (bad magic)", hint="modelctl runs GGUF models")
    version = cur.u32()
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"implausible GGUF counts ({n_tensors} tensors, {n_kv} keys)")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.u32()
        if vtype == _ARRAY:
            etype, count = cur.u32(), cur.u64()
            if count > MAX_ARRAY:
                raise GGUFError(f"GGUF array {key!r} has {count} items, over the limit")
            lengths[key] = count
            values = _read_array(cur, etype, count, keep=count <= MAX_KEEP_ARRAY)
            if values is not None:
                metadata[key] = values
        else:
            metadata[key] = _read_value(cur, vtype)
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 20:
        raise GGUFError(f"bad general.alignment {alignment!r}")
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(cur.u64() for _ in range(n_dims))
        ggml_type = cur.u32()
        offset = cur.u64()
        n = 1
        for d in shape:
            n *= d
        if n >= 1 << 62:
            raise GGUFError(f"tensor {name!r} is implausibly large")
        block, per_block = _quant_sizes(ggml_type)
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n // block * per_block))
    data_offset = -(-cur.pos // alignment) * alignment
    fetched = int(getattr(source, "bytes_fetched", cur.pos))
    return GGUFHeader(version, metadata, lengths, tensors, alignment, data_offset, cur.pos, fetched)


def _read_value(cur: _Cursor, vtype: int) -> Any:
    if vtype == _STRING:
        return cur.string()
    if vtype in _SCALARS:
        fmt, size = _SCALARS[vtype]
        return struct.unpack(fmt, cur.take(size))[0]
    raise GGUFError(f"unknown GGUF value type {vtype}")


def _read_array(cur: _Cursor, etype: int, count: int, *, keep: bool) -> list[Any] | None:
    if etype == _STRING:
        if keep:
            return [cur.string() for _ in range(count)]
        for _ in range(count):
            cur.skip_string()
        return None
    if etype in _SCALARS:
        fmt, size = _SCALARS[etype]
        data = cur.take(size * count)
        return [v[0] for v in struct.iter_unpack(fmt, data)] if keep else None
    raise GGUFError(f"unknown GGUF array element type {etype}")
