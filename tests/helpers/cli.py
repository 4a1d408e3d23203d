"""The real ``modelctl`` command in a subprocess, and the checks every bad-input test makes of its error line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Peak RSS is read in the child at exit (VmHWM of its own memory after exec): wait4's ru_maxrss would also count
# the memory of the pytest process it was forked from.
_MEASURED = (
    "import atexit, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "def hwm():\n"
    "    kb = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "    open(out, 'w').write(kb)\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'modelctl'\n"
    "runpy.run_module('modelctl', run_name='__main__', alter_sys=True)\n"
)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    max_rss_kb: int = 0
    """The process's peak resident memory, when asked for (``rss=True``)."""


def modelctl(
    *args: str,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str = "",
    rss: bool = False,
    timeout: float = 300,
) -> Run:
    """Run ``python -m modelctl ARGS`` (MODELCTL_HOME=``home`` when given; the test's own otherwise) with ``stdin``;
    with ``rss`` also measure its peak resident memory."""
    environ = dict(os.environ, **(env or {}))
    if home is not None:
        environ["MODELCTL_HOME"] = str(home)
    with tempfile.TemporaryDirectory() as scratch:
        hwm = Path(scratch) / "vmhwm"
        command = [sys.executable, "-c", _MEASURED, str(hwm)] if rss else [sys.executable, "-m", "modelctl"]
        done = subprocess.run(
            [*command, *args], env=environ, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        return Run(done.returncode, done.stdout, done.stderr, int(hwm.read_text()) if rss else 0)


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
