"""Hostile GGUF headers: every input either parses or raises GGUFError, quickly and in bounded memory."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelctl.errors import GGUFError
from modelctl.gguf import RangedSource, read_header

EXAMPLES = int(os.environ.get("MODELCTL_FUZZ_EXAMPLES", "10000"))


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def valid_header() -> bytes:
    kv = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("llama"),
        _string("llama.block_count") + struct.pack("<I", 4) + struct.pack("<I", 2),
        _string("tokenizer.ggml.tokens")
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 8, 3)
        + b"".join(_string(t) for t in ("a", "b", "c")),
    ]
    tensors = [
        _string("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 8, 3) + struct.pack("<IQ", 1, 0)
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + b"".join(tensors)


VALID = valid_header()


def parse(data: bytes) -> None:
    read_header(RangedSource(lambda start, end: data[start : end + 1], len(data)))


def test_the_seed_is_valid() -> None:
    source = RangedSource(lambda start, end: VALID[start : end + 1], len(VALID))
    header = read_header(source)
    assert header.architecture == "llama" and header.n_vocab == 3 and header.tensors[0].n_bytes == 48


_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(VALID))),
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("huge"), st.integers(0, len(VALID) - 8), st.sampled_from([2**63, 2**64 - 1, 2**40, 2**31])),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.binary(min_size=1, max_size=16)),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_headers_parse_or_raise_ggufererror(mutations: list[tuple[Any, ...]]) -> None:
    data = bytearray(VALID)
    for m in mutations:
        kind = m[0]
        if kind == "truncate":
            del data[int(m[1]) :]
        elif kind == "flip" and int(m[1]) < len(data):
            data[int(m[1])] ^= int(m[2])
        elif kind == "huge" and int(m[1]) + 8 <= len(data):
            data[int(m[1]) : int(m[1]) + 8] = struct.pack("<Q", int(m[2]))
        elif kind == "insert":
            data[int(m[1]) : int(m[1])] = bytes(m[2])
    with contextlib.suppress(GGUFError):  # anything else (IndexError, MemoryError...) fails the test
        parse(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GGML" + VALID[4:],
        b"GGUF" + struct.pack("<IQQ", 9, 0, 0),
        b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**60),
    ],
)
def test_known_hostile_inputs(data: bytes) -> None:
    with pytest.raises(GGUFError):
        parse(data)


def test_real_model_header(smollm2_gguf: Path) -> None:
    from modelctl.gguf import FileSource

    header = read_header(FileSource(smollm2_gguf))
    assert header.architecture == "llama"
    assert header.n_vocab == 49152
    assert header.arch("block_count") == 30
    assert header.quantization == "Q4_1"
    assert 130e6 < header.parameter_count() < 140e6
    assert header.chat_template and "im_start" in header.chat_template
