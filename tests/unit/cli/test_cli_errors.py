"""Errors a user can cause: one line on stderr, ``modelctl: error: ...`` with what to do, the documented exit code."""

from __future__ import annotations

import json
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

    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
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


BAD_REF = "NOT@@valid"


def test_debug_before_or_after_the_command_gives_the_same_one_line_usage_error() -> None:
    after = modelctl("pull", "--debug", BAD_REF)
    before = modelctl("--debug", "pull", BAD_REF)
    plain = modelctl("pull", BAD_REF)
    assert after.returncode == before.returncode == plain.returncode == 2
    assert after.stderr == before.stderr == plain.stderr, (after.stderr, before.stderr)
    assert after.stderr.startswith("modelctl: error: invalid reference") and after.stderr.count("\n") == 1
    assert "Traceback" not in after.stderr + before.stderr and after.stdout == before.stdout == ""


def test_debug_after_a_command_is_accepted() -> None:
    result = modelctl("list", "--json", "--debug")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is not None and "No such option" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "args", "debug"),
    [
        ([], [], False),
        (["list"], ["list"], False),
        (["--debug", "list"], ["--debug", "list"], True),
        (["pull", "--debug", "ai/x"], ["--debug", "pull", "ai/x"], True),
        (["run", "ai/x", "hi", "--debug"], ["--debug", "run", "ai/x", "hi"], True),
        (["run", "ai/x", "--", "--debug"], ["run", "ai/x", "--", "--debug"], False),
        (["run", "--debug", "ai/x", "--", "--debug"], ["--debug", "run", "ai/x", "--", "--debug"], True),
    ],
)
def test_hoist_debug_moves_it_before_the_command(argv: list[str], args: list[str], debug: bool) -> None:
    from modelctl.cli.app import hoist_debug

    assert hoist_debug(argv) == (args, debug)


def test_commands_read_debug_from_the_root_option() -> None:
    import typer
    from typer.testing import CliRunner

    from modelctl.cli import context

    probe = typer.Typer()

    @probe.callback()
    def _root(debug: bool = typer.Option(False, "--debug")) -> None:
        """Root."""

    @probe.command()
    def show() -> None:
        print(f"debug={context.debug()}")

    assert CliRunner().invoke(probe, ["--debug", "show"]).stdout == "debug=True\n"
    assert CliRunner().invoke(probe, ["show"]).stdout == "debug=False\n"
    assert context.debug() is False  # outside a command


def test_debug_shows_a_traceback_for_unexpected_errors_only(capsys: pytest.CaptureFixture[str]) -> None:
    import click

    from modelctl.cli import errors as cli_errors
    from modelctl.errors import InvalidReference

    for usage in (click.UsageError("No such option '--x'"), InvalidReference("invalid reference 'x@'")):
        assert cli_errors.report(usage, debug=True) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        assert cli_errors.report(exc, debug=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("re-run with --debug and report it\n")


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ("plaintext-htpasswd", "has no bcrypt hash"),
        ("missing-htpasswd", "cannot read --htpasswd"),
        ("root-is-a-file", "cannot use --root"),
    ],
)
def test_registry_serve_start_up_mistakes_are_one_line_exit_2(tmp_path: Path, problem: str, says: str) -> None:
    args = ["registry", "serve", "--root", str(tmp_path / "root"), "--addr", "127.0.0.1:0"]
    if problem == "plaintext-htpasswd":
        (tmp_path / "htpasswd").write_text("alice:s3cret\n")
        args += ["--htpasswd", str(tmp_path / "htpasswd")]
    elif problem == "missing-htpasswd":
        args += ["--htpasswd", str(tmp_path / "nope")]
    else:
        (tmp_path / "file").write_text("x")
        args[3] = str(tmp_path / "file")
    result = modelctl(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("modelctl: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr


def test_registry_serve_on_a_taken_port_is_one_line_exit_7(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = modelctl("registry", "serve", "--root", str(tmp_path / "root"), "--addr", f"127.0.0.1:{port}")
    assert result.returncode == 7, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"modelctl: error: cannot listen on 127.0.0.1:{port}: address already in use: ")
