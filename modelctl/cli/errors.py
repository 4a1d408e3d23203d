"""One place that turns a failure into a one-line message and an exit code, and the process's way out."""

from __future__ import annotations

import gc
import os
import signal
import stat
import sys
import threading
import traceback
from types import FrameType
from typing import NoReturn

import click

from modelctl.atomic import disk_full
from modelctl.errors import INTERRUPTS, Interrupted, ModelctlError, NoSpace, Terminated, signal_of

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def handle_signals() -> None:
    """SIGTERM unwinds the main thread like Ctrl-C does (as ``Terminated``): temp files are removed, partial
    downloads saved, and the command exits 143 with its one line instead of dying where it stood."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def finish(code: int) -> NoReturn:
    """Exit with ``code``.

    Standard output that can no longer be flushed (``save -o - > /dev/full``, a closed pipe) is dropped instead of
    Python reporting it again at exit; a full disk there, after a command that otherwise succeeded, is exit 8.
    After an interrupt the command has put its work in a safe state before raising, so nothing waits any more: what
    is left for a pipe whose reader stopped reading (``save -o - | slow``) is dropped, and worker threads still
    blocked in a system call (a connect to a stalled server) are left behind.
    """
    interrupted = code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
    if interrupted and _stdout_is_a_pipe():
        _drop_stdout()
    try:
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        _drop_stdout()
        if code == 0 and disk_full(exc):
            message = "no space left on the standard output: write it where there is room"
            print(f"modelctl: error: {message}", file=sys.stderr)
            code = NoSpace.exit_code
    if interrupted and _threads_left():
        sys.stderr.flush()
        os._exit(code)
    gc.freeze()  # the collections of interpreter shutdown skip what the command built: ~30 ms less per command
    sys.exit(code)


def _stdout_is_a_pipe() -> bool:
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _drop_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _threads_left() -> bool:
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())


def report(exc: BaseException, *, debug: bool) -> int:
    """Print ``modelctl: error: ...`` on stderr and return the exit code.

    With ``debug`` the traceback comes first, except for usage errors: a mistyped option or reference is the user's,
    and its one line says all there is to say.
    """
    if debug and not _is_usage_error(exc):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Interrupted):
        print(f"modelctl: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, INTERRUPTS):
        print("modelctl: interrupted", file=sys.stderr)
        return 128 + signal_of(exc)
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
    if disk_full(exc):  # a write no command expected to fail this way (each says how much room it needs)
        where = f"the disk holding {exc.filename}" if isinstance(exc, OSError) and exc.filename else "the disk"
        hint = "free some space (modelctl prune, modelctl rm)"
        print(f"modelctl: error: no space left on {where}: {hint}", file=sys.stderr)
        return NoSpace.exit_code
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
