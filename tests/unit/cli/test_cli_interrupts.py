"""The CLI's side of interrupts and full disks: SIGTERM raised as Terminated, and the one line and exit code of
each (the commands' own lines are tested on real processes in tests/e2e/test_interrupts.py)."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from modelctl.cli import errors
from modelctl.errors import Interrupted, NoSpace, Terminated


def test_sigterm_unwinds_the_main_thread_as_terminated() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    errors.handle_signals()
    try:
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 1.0)  # let the handler run (it runs between bytecodes of the main thread)
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (
            Interrupted("interrupted: 5 of 9 bytes kept; run the same command to resume"),
            130,
            "modelctl: interrupted: 5 of 9 bytes kept; run the same command to resume",
        ),
        (Interrupted("interrupted: x", signum=signal.SIGTERM), 143, "modelctl: interrupted: x"),
        (KeyboardInterrupt(), 130, "modelctl: interrupted"),
        (Terminated(), 143, "modelctl: interrupted"),
        (
            NoSpace("not enough disk space in /d: the pull of x needs 3.0 MiB more (0 B free)", hint="free some"),
            8,
            "modelctl: error: not enough disk space in /d: the pull of x needs 3.0 MiB more (0 B free): free some",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "/d/f"),
            8,
            "modelctl: error: no space left on the disk holding /d/f: free some space (modelctl prune, modelctl rm)",
        ),
    ],
)
def test_one_line_and_the_exit_code(
    exc: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert errors.report(exc, debug=False) == code
    assert capsys.readouterr().err == line + "\n"
