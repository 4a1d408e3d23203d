"""The source seam: the factory picks the source from the reference alone, and ranged reads give exactly the window
asked for whatever the server sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from modelctl import config, reference, sources
from modelctl.sources.huggingface import HubSource
from modelctl.sources.registry import RegistrySource
from modelctl.sources.source import take_window


def test_the_factory_chooses_by_reference_without_the_network() -> None:
    with sources.Sources(config.from_env()) as found:
        assert isinstance(found.for_reference(reference.parse("ai/smollm2:135M-Q4_K_M")), RegistrySource)
        assert isinstance(found.for_reference(reference.parse("hf.co/acme/Tiny-GGUF:Q8_0")), HubSource)
        hub = found.for_reference(reference.parse("hf.co/acme/Tiny-GGUF"))
        assert hub.card() is None  # the Hub's README is no modelctl card: nothing is asked


def test_take_window_skips_what_a_server_ignoring_range_sent_and_stops_early() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"0123"
        yield b"4567"
        yield b"89"
        raise AssertionError("read past the window")

    assert take_window(chunks(), 2, 5) == b"23456"
    assert take_window(iter([b"abc"]), 0, 10) == b"abc"  # a short body gives what there is


@dataclass
class _Reader:
    offset: int
    body: bytes

    def iter_chunks(self) -> Iterator[bytes]:
        yield from (self.body[i : i + 3] for i in range(0, len(self.body), 3))


class _Whole:
    """A server that ignores Range: every read starts at byte 0."""

    reference = reference.parse("ai/x")

    @contextmanager
    def open_range(self, digest: str, start: int, end: int | None) -> Iterator[_Reader]:
        yield _Reader(0, b"abcdefghijklmnop")


def test_read_gives_the_window_even_when_the_server_sends_everything() -> None:
    assert sources.read(_Whole(), "sha256:" + "0" * 64, 4, 9) == b"efghij"  # type: ignore[arg-type]
