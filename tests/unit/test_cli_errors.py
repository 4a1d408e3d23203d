"""Errors a user can cause: one line on stderr, ``modelctl: error: ...`` with what to do, the documented exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import registry


def modelctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelctl", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("fit", "ai/smollm2", "--ctx-size", "-5"), "see modelctl fit --help"),
        (("list", "--bogus"), "No such option '--bogus'"),
        (("nosuchcommand",), "see modelctl --help"),
        (("registry", "gc", "--root", "/nonexistent/registry"), "is not a registry root"),
        (("save", "ai/smollm2", "-o", "/nonexistent/dir/models.tar"), "directory /nonexistent/dir does not exist"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], says: str) -> None:
    result = modelctl(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("modelctl: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


def test_help_still_prints_help() -> None:
    result = modelctl("fit", "--help")
    assert result.returncode == 0 and "Usage: modelctl fit" in result.stdout


def test_registry_gc_can_be_called_twice(tmp_path: Path) -> None:
    # a submodule named like the function used to replace it on first import
    (tmp_path / "blobs").mkdir()
    assert registry.gc(tmp_path) == [] and registry.gc(tmp_path) == []
