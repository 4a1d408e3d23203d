"""A bounded GGUF header reader: metadata and tensor infos from a local file or from ranged reads of a blob.

Every count and length in a GGUF header comes from the file and may be hostile. Each one is checked against a
limit and against the bytes that remain before anything is allocated; large arrays (tokenizer tokens, merges,
scores) are skipped and only counted unless the caller asks for them; the header may not be larger than
``MAX_HEADER``. Any problem raises :class:`GGUFError` with one clear line, never another exception, and memory
stays bounded whatever the input. Only the bytes the parse needs are read: skipped numeric arrays are not fetched.

The format (GGUF v2 and v3, little-endian): magic ``GGUF``, u32 version, u64 tensor count, u64 metadata count;
each metadata entry a string key, a u32 value type and the value (arrays: u32 element type, u64 count, items);
then per tensor its name, u32 n_dims, n_dims u64 dimensions, u32 ggml type and u64 offset into the data section,
which starts at the next multiple of ``general.alignment`` (default 32).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Protocol, TypeAlias

from modelctl.errors import GGUFError
from modelctl.ggml_types import FILE_TYPE_NAMES, QUANT_SIZES, TYPE_NAMES

MAX_HEADER = 256 << 20
"""Metadata plus tensor infos may not exceed this (real headers are 1-10 MiB; the tokenizer dominates)."""
MAX_STRING = 1 << 20
"""A metadata string (a chat template is the largest real one, tens of KiB)."""
MAX_ARRAY_STRING = 64 << 10
"""One string inside an array (a token or a merge)."""
MAX_ARRAY = 1 << 27
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 4
MAX_NAME = 63
"""ggml's GGML_MAX_NAME is 64 bytes including the terminating NUL."""
MAX_KEY = 1 << 16
KEEP_ARRAY = 1024
"""Arrays up to this many items are kept (per-layer hyper-parameters); longer ones only counted."""
KEEP_BUDGET = 1 << 20
"""Items kept from arrays over the whole header, so that many small arrays cannot exhaust memory either."""
INT64_MAX = (1 << 63) - 1
DEFAULT_ALIGNMENT = 32

Scalar: TypeAlias = int | float | bool | str
Value: TypeAlias = Scalar | list[Scalar]

_STRING, _ARRAY = 8, 9
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class ByteSource(Protocol):
    """Random-access bytes: a local file or a blob read by HTTP Range requests."""

    @property
    def size(self) -> int | None:
        """The total size when known (a registry descriptor says it; a local file has one)."""
        ...

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the data)."""
        ...


class FileSource:
    """A local file, read with positional reads (no file object kept open between calls)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._size: int | None = self.path.stat().st_size
        except OSError as exc:
            raise GGUFError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        self.bytes_fetched = 0

    @property
    def size(self) -> int | None:
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise GGUFError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            raise GGUFError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        self.bytes_fetched += len(data)
        return data


class RangedSource:
    """Bytes through ``open_range(start, end_inclusive)`` (an HTTP Range read), fetched in growing windows.

    The first read fetches ``first_window`` bytes (256 KiB), each further one twice as many as the last, up to
    ``max_window``: a small header costs one request, a 10 MiB tokenizer a handful; after a skipped array the
    windows start small again. Only the latest window is kept.
    ``bytes_fetched`` counts what came over the wire.
    """

    def __init__(
        self,
        open_range: Callable[[int, int], bytes],
        size: int | None,
        *,
        first_window: int = 256 << 10,
        max_window: int = 16 << 20,
    ) -> None:
        self._open_range = open_range
        self._size = size
        self._window = self._first_window = first_window
        self._max_window = max_window
        self._buf = b""
        self._buf_start = 0
        self.bytes_fetched = 0
        self.requests = 0

    @property
    def size(self) -> int | None:
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        start = offset - self._buf_start
        buf_end = self._buf_start + len(self._buf)
        if start >= 0 and offset + size <= buf_end:
            return self._buf[start : start + size]
        # keep the part of the window the read overlaps; fetch only what follows it
        keep = self._buf[start:] if 0 <= start < len(self._buf) else b""
        if offset > buf_end:
            self._window = self._first_window  # a skipped array: what follows is usually small again
        fetch_from = offset + len(keep)
        length = max(size - len(keep), self._window)
        if self._size is not None:
            length = min(length, self._size - fetch_from)
        data = b""
        if length > 0:
            data = self._open_range(fetch_from, fetch_from + length - 1)[:length]
            self.requests += 1
            self.bytes_fetched += len(data)
            self._window = min(self._window * 2, self._max_window)
        self._buf, self._buf_start = keep + data, offset
        return self._buf[:size]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    """ggml order: ``shape[0]`` is the row length (``ne[0]``)."""
    ggml_type: int
    offset: int
    """Relative to the start of the data section of its file."""
    n_bytes: int
    file: int = 0
    """Index of the shard that holds it."""

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """What a GGUF header says: metadata (scalars and short arrays), array lengths and tensor infos.

    Only what the file says: what it means (layers, heads, the quantisation, ...) is derived in
    :mod:`modelctl.fit.shapes`.
    """

    version: int
    metadata: Mapping[str, Value]
    array_lengths: Mapping[str, int]
    """Every array's length, including those that were skipped (``tokenizer.ggml.tokens`` gives n_vocab)."""
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    """Where the tensor data starts (the header rounded up to ``alignment``)."""
    header_bytes: int
    """Bytes of metadata and tensor infos (what was parsed)."""
    bytes_fetched: int = 0
    """Bytes read from the source (remote: over the wire)."""
    file_size: int | None = None
    n_files: int = 1
    data_offsets: tuple[int, ...] = field(default=())
    """Per shard, where its data section starts (a merged view of a split model has several)."""

    def get(self, key: str, default: Value | None = None) -> Value | None:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        """``general.architecture``, the prefix of the model's own keys."""
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch(self, key: str, default: Value | None = None) -> Value | None:
        """``{architecture}.{key}``, e.g. ``arch("block_count")``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def arch_int(self, key: str, default: int = 0) -> int:
        """``arch(key)`` when it is an integer, else ``default``."""
        value = self.arch(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return default
        return value

    def tensor(self, name: str) -> TensorInfo | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


# --- ggml types


@cache
def _quant_sizes() -> dict[int, tuple[int, int]]:
    import gguf

    return {int(k): (int(v[0]), int(v[1])) for k, v in gguf.GGML_QUANT_SIZES.items()}


@cache
def _type_names() -> dict[int, str]:
    import gguf

    return {int(t): t.name for t in gguf.GGMLQuantizationType}


@cache
def _file_type_names() -> dict[int, str]:
    import gguf

    return {int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_") for t in gguf.LlamaFileType}


# The tables in modelctl.ggml_types answer for every type they know; the gguf package (a 0.2 s import, numpy with
# it) only for a newer one.


def ggml_type_name(ggml_type: int) -> str:
    return TYPE_NAMES.get(ggml_type) or _type_names().get(ggml_type, f"type{ggml_type}")


def file_type_name(file_type: int) -> str | None:
    key = file_type & ~1024  # 1024: LLAMA_FTYPE_GUESSED
    name = FILE_TYPE_NAMES.get(key)
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_") if name else _file_type_names().get(key)
    return None if name in (None, "GUESSED") else name


def type_sizes(ggml_type: int) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type."""
    sizes = QUANT_SIZES.get(ggml_type) or _quant_sizes().get(ggml_type)
    if sizes is None:
        raise GGUFError(f"unknown ggml tensor type {ggml_type}", hint="the file may be newer than modelctl")
    return sizes


def row_bytes(ggml_type: int, n: int) -> int:
    """Bytes of ``n`` consecutive elements of ``ggml_type`` (ggml_row_size)."""
    block, size = type_sizes(ggml_type)
    return n // block * size


# --- the parser


class _Reader:
    """Sequential reads over a ByteSource with a small buffer, every length checked before it is trusted."""

    CHUNK = 64 << 10

    def __init__(self, source: ByteSource) -> None:
        self.src = source
        size = source.size
        self.limit = MAX_HEADER if size is None else min(MAX_HEADER, size)
        self.size = size
        self.pos = 0
        self.buf = b""
        self.buf_pos = 0

    def _check(self, n: int, what: str) -> None:
        end = self.pos + n
        if end > self.limit:
            if self.size is not None and end > self.size:
                raise GGUFError(f"truncated GGUF header ({what}): the file ends at byte {self.size}")
            raise GGUFError(f"GGUF header larger than {MAX_HEADER >> 20} MiB ({what})")

    def _fill(self, n: int, what: str) -> int:
        """Make [pos, pos + n) available in ``buf``; return its index there."""
        i = self.pos - self.buf_pos
        if i >= 0 and i + n <= len(self.buf):
            return i
        self._check(n, what)
        want = max(n, self.CHUNK)
        if self.size is not None:
            want = min(want, self.size - self.pos)
        data = self.src.read_at(self.pos, want)
        if len(data) < n:
            raise GGUFError(f"truncated GGUF header ({what}): the data ends at byte {self.pos + len(data)}")
        self.buf, self.buf_pos = data, self.pos
        return 0

    def take(self, n: int, what: str) -> bytes:
        i = self._fill(n, what)
        self.pos += n
        return self.buf[i : i + n]

    def skip(self, n: int, what: str) -> None:
        self._check(n, what)
        self.pos += n

    def u32(self, what: str) -> int:
        i = self._fill(4, what)
        self.pos += 4
        return int(_U32.unpack_from(self.buf, i)[0])

    def u64(self, what: str) -> int:
        i = self._fill(8, what)
        self.pos += 8
        return int(_U64.unpack_from(self.buf, i)[0])

    def string(self, what: str, limit: int = MAX_STRING) -> str:
        n = self.u64(what)
        if n > limit:
            raise GGUFError(f"GGUF string in {what} is {n} bytes long (limit {limit})")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"GGUF string in {what} is not UTF-8") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings (a vocabulary: 50,000-250,000 of them). The lengths are read straight from the
        buffer in a tight loop, and only a string that crosses the buffer's end takes the checked path (through
        ``u64`` and ``skip`` per string, SmolLM2's 49K-token header took 0.125 s to parse, now 0.044 s)."""
        unpack = _U64.unpack_from
        left = count
        while left:
            buf, i = self.buf, self.pos - self.buf_pos
            end = len(buf)
            while left and i + 8 <= end:  # i >= 0: the buffer never starts after pos
                n = unpack(buf, i)[0]
                if n > MAX_ARRAY_STRING:
                    raise GGUFError(f"GGUF string in {what} is {n} bytes long (limit {MAX_ARRAY_STRING})")
                if i + 8 + n > end:
                    break
                i += 8 + n
                left -= 1
            self.pos = self.buf_pos + i
            if left:  # the next length or string crosses the buffer's end: the checked, refilling path
                n = self.u64(what)
                if n > MAX_ARRAY_STRING:
                    raise GGUFError(f"GGUF string in {what} is {n} bytes long (limit {MAX_ARRAY_STRING})")
                self.skip(n, what)
                left -= 1

    def scalar(self, vtype: int, what: str) -> Scalar:
        fmt = _SCALARS[vtype]
        i = self._fill(fmt.size, what)
        self.pos += fmt.size
        value: Scalar = fmt.unpack_from(self.buf, i)[0]
        return value


def read_header(source: ByteSource, *, want_arrays: frozenset[str] = frozenset()) -> GGUFHeader:
    """Parse the header of one GGUF file. Arrays named in ``want_arrays`` are read whatever their length."""
    r = _Reader(source)
    magic = r.take(4, "magic") if (source.size is None or source.size >= 4) else b""
    if magic != b"GGUF":
        raise GGUFError("not a GGUF file (bad magic)", hint="modelctl runs GGUF models")
    version = r.u32("version")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 24) in (1, 2, 3):
            raise GGUFError("big-endian GGUF files are not supported")
        raise GGUFError(f"unsupported GGUF version {version}", hint="modelctl reads GGUF v2 and v3")
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    if n_tensors > MAX_TENSORS:
        raise GGUFError(f"GGUF header claims {n_tensors} tensors (limit {MAX_TENSORS})")
    if n_kv > MAX_KV:
        raise GGUFError(f"GGUF header claims {n_kv} metadata entries (limit {MAX_KV})")
    # each entry needs at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8: check before looping
    r._check(n_kv * 13 + n_tensors * 32, "the metadata and tensor counts")

    metadata: dict[str, Value] = {}
    lengths: dict[str, int] = {}
    budget = KEEP_BUDGET
    for index in range(n_kv):
        key = r.string(f"metadata key #{index}", MAX_KEY)
        what = key if key.isprintable() else repr(key)  # a hostile key never breaks the one-line error
        if key in metadata or key in lengths:
            raise GGUFError(f"duplicate GGUF metadata key {key!r}")
        vtype = r.u32(what)
        if vtype == _ARRAY:
            etype = r.u32(what)
            count = r.u64(what)
            if count > MAX_ARRAY:
                raise GGUFError(f"GGUF array {key!r} has {count} items (limit {MAX_ARRAY})")
            lengths[key] = count
            keep = key in want_arrays or (count <= KEEP_ARRAY and count <= budget)
            values = _array(r, what, etype, count, keep=keep)
            if values is not None:
                budget -= min(count, budget)
                metadata[key] = values
        elif vtype == _STRING:
            metadata[key] = r.string(what)
        elif vtype in _SCALARS:
            metadata[key] = r.scalar(vtype, what)
        else:
            raise GGUFError(f"GGUF metadata {key!r} has unknown value type {vtype}")

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
        or alignment > 1 << 20
    ):
        raise GGUFError(f"bad general.alignment {alignment!r} (a power of two is required)")

    tensors = _tensor_infos(r, n_tensors, alignment)
    header_bytes = r.pos
    data_offset = -(-header_bytes // alignment) * alignment
    size = source.size
    if size is not None and tensors:
        data_size = size - data_offset
        for t in tensors:
            if t.offset + t.n_bytes > data_size:
                raise GGUFError(
                    f"tensor {t.name!r} lies outside the file (offset {t.offset}, {t.n_bytes} bytes, "
                    f"{max(data_size, 0)} bytes of data)"
                )
    fetched = getattr(source, "bytes_fetched", header_bytes)
    return GGUFHeader(
        version=version,
        metadata=metadata,
        array_lengths=lengths,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        header_bytes=header_bytes,
        bytes_fetched=int(fetched) if isinstance(fetched, int) else header_bytes,
        file_size=size,
        data_offsets=(data_offset,),
    )


def _array(r: _Reader, key: str, etype: int, count: int, *, keep: bool) -> list[Scalar] | None:
    if etype == _STRING:
        if not keep:
            r._check(count * 8, key)
            r.skip_strings(count, key)
            return None
        r._check(count * 8, key)
        return [r.string(key, MAX_ARRAY_STRING) for _ in range(count)]
    fmt = _SCALARS.get(etype)
    if fmt is None:
        kind = "nested arrays are" if etype == _ARRAY else f"element type {etype} is"
        raise GGUFError(f"GGUF array {key!r}: {kind} not supported")
    n = fmt.size * count
    if not keep:
        r.skip(n, key)
        return None
    data = r.take(n, key)
    return [v[0] for v in fmt.iter_unpack(data)]


def _tensor_infos(r: _Reader, n_tensors: int, alignment: int) -> tuple[TensorInfo, ...]:
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for index in range(n_tensors):
        name = r.string(f"tensor #{index} name", MAX_NAME)
        if name in names:
            raise GGUFError(f"duplicate GGUF tensor {name!r}")
        names.add(name)
        what = name if name.isprintable() else repr(name)
        n_dims = r.u32(what)
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(r.u64(what) for _ in range(n_dims))
        n = 1
        for d in shape:
            if d > INT64_MAX:
                raise GGUFError(f"tensor {name!r} has a dimension of {d}")
            n *= d
            if n > INT64_MAX:
                raise GGUFError(f"tensor {name!r} has more elements than fit in 64 bits")
        ggml_type = r.u32(what)
        block, per_block = type_sizes(ggml_type)
        if shape[0] % block:
            raise GGUFError(
                f"tensor {name!r}: row of {shape[0]} elements is not a multiple of the {ggml_type_name(ggml_type)} "
                f"block size {block}"
            )
        offset = r.u64(what)
        if offset % alignment:
            raise GGUFError(f"tensor {name!r} data offset {offset} is not aligned to {alignment} bytes")
        n_bytes = n // block * per_block
        if n_bytes > INT64_MAX or offset > INT64_MAX:
            raise GGUFError(f"tensor {name!r} is implausibly large")
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
    return tuple(tensors)


# --- split models


def read_headers(sources: Sequence[ByteSource], *, want_arrays: frozenset[str] = frozenset()) -> list[GGUFHeader]:
    """Every shard's header (a split model is several files, ``-00001-of-00003.gguf`` and so on)."""
    return [read_header(s, want_arrays=want_arrays) for s in sources]


def merge(headers: Iterable[GGUFHeader]) -> GGUFHeader:
    """One view of a split model: the first shard's metadata, every shard's tensors (``TensorInfo.file`` says which).

    Checks what llama.cpp checks: ``split.count`` matches the shards given, shards are in ``split.no`` order and
    no tensor appears twice.
    """
    shards = list(headers)
    if not shards:
        raise GGUFError("no GGUF header to read")
    first = shards[0]
    count = first.metadata.get("split.count")
    if len(shards) == 1 and (count in (None, 0, 1) or count == first.n_files):
        return first  # a single file, or a view merged already
    if count != len(shards):
        files = f"{len(shards)} GGUF file{'s' if len(shards) > 1 else ''}"
        raise GGUFError(f"the model has {files} but split.count says {count}", hint="pull every shard")
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for i, h in enumerate(shards):
        number = h.metadata.get("split.no", i)
        if number != i:
            raise GGUFError(f"GGUF shard {i + 1} says it is split {number!r}: shards are out of order")
        for t in h.tensors:
            if t.name in names:
                raise GGUFError(f"tensor {t.name!r} appears in more than one shard")
            names.add(t.name)
            tensors.append(replace(t, file=i))
    expected = first.metadata.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise GGUFError(f"the shards hold {len(tensors)} tensors but split.tensors.count says {expected}")
    lengths = dict(first.array_lengths)
    return GGUFHeader(
        version=first.version,
        metadata=first.metadata,
        array_lengths=lengths,
        tensors=tuple(tensors),
        alignment=first.alignment,
        data_offset=first.data_offset,
        header_bytes=sum(h.header_bytes for h in shards),
        bytes_fetched=sum(h.bytes_fetched for h in shards),
        file_size=None if any(h.file_size is None for h in shards) else sum(h.file_size or 0 for h in shards),
        n_files=len(shards),
        data_offsets=tuple(h.data_offset for h in shards),
    )
