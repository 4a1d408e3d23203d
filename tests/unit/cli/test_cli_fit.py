"""``modelctl fit`` from the command line: local GGUF files read in place, and the exit codes of bad ones."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from helpers.ggufs import tiny_llama, tiny_llama_split

from modelctl.cli.app import run


def invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["modelctl", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # run reads piped input
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_of_a_local_file_reads_it_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    path = tiny_llama(tmp_path / "models" / "m.gguf")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(capsys, monkeypatch, "fit", "./models/m.gguf", "--json", "--ctx-size", "512")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reference"] == str(path)
    assert doc["settings"]["ctx_size"] == 512 and doc["bytes_fetched"] == 0
    assert doc["verdict"] in ("fits", "partial")
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    # not in the store: list shows nothing, and no store was created for it
    code, out, _ = invoke(capsys, monkeypatch, "list", "--quiet")
    assert code == 0 and out == ""


def test_fit_of_a_split_file_by_its_first_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = tiny_llama_split(tmp_path, 2)
    code, out, err = invoke(capsys, monkeypatch, "fit", f"file://{shards[0]}", "--json")
    assert code == 0, err
    one = tiny_llama(tmp_path / "whole.gguf")
    code, whole, err = invoke(capsys, monkeypatch, "fit", str(one), "--json")
    assert code == 0, err
    assert json.loads(out)["memory"]["kv_cache"] == json.loads(whole)["memory"]["kv_cache"]


@pytest.mark.parametrize(
    ("name", "content", "exit_code", "words"),
    [
        ("absent.gguf", None, 2, "no such file"),
        ("notes.gguf", b"just some text\n", 5, "is not a GGUF file"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes | None,
    exit_code: int,
    words: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for command in ("fit", "run", "serve"):
        args = [command, str(path)] + {"fit": [], "run": ["Hi", "--no-pull"], "serve": ["--no-pull"]}[command]
        code, out, err = invoke(capsys, monkeypatch, *args)
        assert code == exit_code, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("modelctl: error: ") and words in lines[0], (command, err)
        assert out == ""


def test_remote_is_for_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_llama(tmp_path / "m.gguf")
    code, _, err = invoke(capsys, monkeypatch, "fit", str(path), "--remote")
    assert code == 2 and "drop --remote" in err
