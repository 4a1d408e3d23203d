"""Local GGUF files named where a reference is expected: which texts are files, split shards, the errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.ggufs import small_gguf, tiny_llama, tiny_llama_split

from modelctl import reference
from modelctl.errors import GGUFError, UsageError
from modelctl.sources import local


@pytest.mark.parametrize(
    "text",
    ["./x.gguf", "../m/x.gguf", "/abs/x.gguf", "~/x.gguf", "file:///abs/x.gguf", "file://./x.gguf", "x.GGUF", "/a/x"],
)
def test_paths_are_files(text: str) -> None:
    assert reference.is_file(text)


@pytest.mark.parametrize(
    "text", ["ai/smollm2", "ai/smollm2:135M-Q4_K_M", "hf.co/org/Repo-GGUF:Q8_0", "ollama://llama3.2:1b", "smollm2"]
)
def test_references_are_not_files(text: str) -> None:
    assert not reference.is_file(text)
    assert local.find(text) is None


def test_path_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert local.path_of("./a b.gguf") == tmp_path / "a b.gguf"
    assert local.path_of("file:///srv/a%20b.gguf") == Path("/srv/a b.gguf")
    assert local.path_of("file://localhost/srv/x.gguf") == Path("/srv/x.gguf")
    assert local.path_of("file://x.gguf") == tmp_path / "x.gguf"
    assert local.path_of("~/x.gguf") == tmp_path / "home" / "x.gguf"
    with pytest.raises(UsageError):
        local.path_of("file://")


def test_a_file_is_read_in_place_and_not_changed(tmp_path: Path) -> None:
    path = tiny_llama(tmp_path / "m.gguf")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    found = local.find(str(path))
    assert found is not None
    assert found.shards == (path,) and found.short == "m.gguf"
    model = found.model()
    assert model.architecture == "llama" and model.quantization == "F32" and model.weights_size == path.stat().st_size
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file") as err:
        local.open_file(str(tmp_path / "absent.gguf"))
    assert err.value.exit_code == 2


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "d.gguf").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        local.open_file(str(tmp_path / "d.gguf"))


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04 a zip", b"GGUF\x09\x00\x00\x00"])
def test_not_gguf_is_exit_5(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError) as err:
        local.open_file(str(path))
    assert err.value.exit_code == 5
    assert "\n" not in str(err.value)


def test_split_model_by_its_first_shard(tmp_path: Path) -> None:
    shards = tiny_llama_split(tmp_path, 3)
    found = local.open_file(f"file://{shards[0]}")
    assert found.shards == tuple(shards)
    assert found.header.n_files == 3
    assert len(found.header.tensors) == 2 * 9 + 3


def test_split_model_named_by_a_later_shard(tmp_path: Path) -> None:
    shards = tiny_llama_split(tmp_path, 3)
    with pytest.raises(UsageError, match="shard 2 of 3") as err:
        local.open_file(str(shards[1]))
    assert str(shards[0]) in str(err.value)


def test_split_model_with_a_missing_shard(tmp_path: Path) -> None:
    shards = tiny_llama_split(tmp_path, 3)
    shards[2].unlink()
    with pytest.raises(UsageError, match=r"00003-of-00003\.gguf is not beside it"):
        local.open_file(str(shards[0]))


def test_split_count_that_disagrees_with_the_names(tmp_path: Path) -> None:
    # a shard written as 1 of 2, named as the only file of a 1-file split: llama.cpp would refuse it too
    small_gguf(tmp_path / "m-00001-of-00001.gguf", split=(0, 2))
    with pytest.raises(GGUFError, match=r"split\.count"):
        local.open_file(str(tmp_path / "m-00001-of-00001.gguf"))
