"""Dropping a blob's lock file while holding it (after a commit, or by ``prune --partials``) must never let two
processes hold the blob's lock at once: one that was waiting on the old file, and one that created the new file.
This is filelock's behaviour since the version pyproject.toml asks for; the test keeps it from regressing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import filelock

from modelctl.transfer import download

WAITER = """
import filelock, sys, time
lock = filelock.FileLock(sys.argv[1])
print("waiting", flush=True)
lock.acquire()
print("acquired", time.monotonic(), flush=True)
time.sleep(float(sys.argv[2]))
print("released", time.monotonic(), flush=True)
lock.release()
"""


def _start(path: Path, hold: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WAITER, str(path), str(hold)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
    return proc


def _span(proc: subprocess.Popen[str]) -> tuple[float, float]:
    out, _ = proc.communicate(timeout=60)
    times = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}
    return times["acquired"], times["released"]


def test_a_waiter_on_a_dropped_lock_file_and_a_newcomer_never_hold_it_together(tmp_path: Path) -> None:
    path = tmp_path / f"{'a' * 64}.lock"
    holder = filelock.FileLock(str(path))
    holder.acquire()
    waiter = _start(path, hold=1.0)  # opened the old file and waits on it
    time.sleep(0.3)  # it is blocked in acquire()
    download.drop_lock_file(holder)
    assert not path.exists()
    newcomer = _start(path, hold=1.0)  # creates a new file at the path and takes it
    time.sleep(0.3)
    holder.release()
    spans = sorted([_span(waiter), _span(newcomer)])
    (_, first_released), (second_acquired, _) = spans
    assert second_acquired >= first_released, f"both held the lock at once: {spans}"
