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


def test_every_exit_code_is_documented_in_the_readme() -> None:
    """Scripts branch on exit codes: each error class's code is listed in the README's contract."""
    import re

    from modelctl import errors

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"Exit codes: (.*?)\n\n", text, re.S)
    assert listed is not None
    documented = {int(n) for n in re.findall(r"(?:^|;\s)(\d+) ", listed.group(1))}
    codes = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)}
    assert codes - documented == set()
    assert 9 in documented


def test_a_runtime_crash_is_one_line_with_exit_9(capsys: pytest.CaptureFixture[str]) -> None:
    from modelctl.cli import errors as cli_errors
    from modelctl.errors import RuntimeCrashed

    crash = RuntimeCrashed("the runtime crashed (SIGSEGV, segmentation fault) while generating", hint="re-run")
    assert cli_errors.report(crash, debug=False) == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("modelctl: error: the runtime crashed (SIGSEGV")
