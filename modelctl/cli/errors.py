"""One place that turns a failure into a one-line message and an exit code."""

from __future__ import annotations

import sys
import traceback

import click

from modelctl.errors import ModelctlError

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def report(exc: BaseException, *, debug: bool) -> int:
    """Print ``modelctl: error: ...`` on stderr and return the exit code.

    With ``debug`` the traceback comes first, except for usage errors: a mistyped option or reference is the user's,
    and its one line says all there is to say.
    """
    if debug and not _is_usage_error(exc):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        print("modelctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, click.UsageError):
        where = f"{exc.ctx.command_path} --help" if exc.ctx else "modelctl --help"
        print(f"modelctl: error: {exc.format_message().rstrip('.')}: see {where}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, click.ClickException):
        print(f"modelctl: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        print("modelctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, ModelctlError):
        print(f"modelctl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError) and exc.filename:
        print(f"modelctl: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return EXIT_UNEXPECTED
    print(
        f"modelctl: error: unexpected {type(exc).__name__}: {exc}: re-run with --debug and report it",
        file=sys.stderr,
    )
    return EXIT_UNEXPECTED


def _is_usage_error(exc: BaseException) -> bool:
    return isinstance(exc, click.ClickException | click.exceptions.Abort) or (
        isinstance(exc, ModelctlError) and exc.exit_code == EXIT_USAGE
    )
