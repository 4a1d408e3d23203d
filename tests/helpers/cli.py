"""The real ``modelctl`` command in a subprocess, and the checks every bad-input test makes of its error line."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    max_rss_kb: int
    """The process's peak resident memory (from wait4)."""


def modelctl(
    *args: str, home: Path | None = None, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 300
) -> Run:
    """Run ``python -m modelctl ARGS`` (MODELCTL_HOME=``home`` when given; the test's own otherwise) with ``stdin``
    and wait for it, keeping its peak RSS."""
    environ = dict(os.environ, **(env or {}))
    if home is not None:
        environ["MODELCTL_HOME"] = str(home)
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        given.write(stdin.encode())
        given.seek(0)
        command = [sys.executable, "-m", "modelctl", *args]
        proc = subprocess.Popen(command, env=environ, stdin=given, stdout=out, stderr=err)
        try:
            _, status, usage = _wait4(proc, timeout)
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return Run(
            os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode(), int(usage.ru_maxrss)
        )


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, resource.struct_rusage]:
    """os.wait4 with a deadline (SIGKILL when it passes)."""
    timer = threading.Timer(timeout, lambda: os.kill(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return pid, status, usage


def one_line_error(result: Run, code: int, *, says: str = "", hint: str = "", progress: bool = False) -> str:
    """Assert exit ``code`` and exactly one ``modelctl: error:`` line on stderr (containing ``says`` and, after the
    message, ``hint``): the only line, or with ``progress`` the last one after progress lines; return it."""
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {result.stderr}"
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("modelctl: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (progress or len(lines) == 1), result.stderr
    line = errors[0]
    assert "Traceback" not in line and "unexpected" not in line, line
    assert says in line, f"{says!r} not in {line!r}"
    if hint:
        assert hint in line.split(": ", 2)[-1], f"hint {hint!r} not in {line!r}"
    return line
