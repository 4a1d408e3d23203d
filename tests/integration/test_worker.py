"""The runtime worker's death is described, whatever kills it: real worker processes, no model needed.

A load that dies (a signal before ``ready``) and a Python error inside the worker both become RuntimeCrashed
(exit 9) naming what happened and the phase; the worker never outlives the socket to its parent.
"""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import pytest

from modelctl.errors import RuntimeCrashed
from modelctl.runtime.engine import LoadSpec
from modelctl.runtime.process import Worker, WorkerEngine


def _worker(**kwargs: str) -> Worker:
    return Worker(name="ai/x:1", settings="ctx 256, gpu layers 0", verbose=False, **kwargs)


@pytest.mark.parametrize(
    ("signum", "words"),
    [
        (signal.SIGABRT, "SIGABRT, aborted"),
        (signal.SIGSEGV, "SIGSEGV, segmentation fault"),
        (signal.SIGKILL, "SIGKILL, killed"),
    ],
)
def test_a_signal_during_the_load_is_named_with_its_phase(signum: int, words: str) -> None:
    worker = _worker()
    try:
        os.kill(worker.proc.pid, signum)
        with pytest.raises(RuntimeCrashed) as caught:
            worker.recv()
    finally:
        worker.close()
    error = caught.value
    assert error.exit_code == 9
    assert error.signal == signal.Signals(signum).name
    assert error.phase == "load"
    assert f"the runtime crashed ({words}" in str(error)
    assert "while loading ai/x:1 (ctx 256, gpu layers 0)" in str(error)
    assert "MODELCTL_CPU_BUFFERS=none" in str(error)


def test_a_python_error_in_the_worker_is_reported_with_its_text() -> None:
    worker = _worker(cpu_buffers="all")
    try:
        assert isinstance(worker.hello()["gpu_offload"], bool)
        worker.send(("bogus",))
        with pytest.raises(RuntimeCrashed) as caught:
            worker.recv()
    finally:
        worker.close()
    text = str(caught.value)
    assert "a Python error in the worker: RuntimeError: expected a load request" in text
    assert caught.value.signal is None
    assert "unset MODELCTL_CPU_BUFFERS" in text  # the AMX path is the likely culprit under "all"
    with pytest.raises(RuntimeCrashed):  # every later call says the same
        worker.send(("count", []))


def test_a_model_llama_cpp_refuses_is_a_plain_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid, empty header: no architecture
    with pytest.raises(Exception) as caught:
        WorkerEngine(LoadSpec(model_path=bad, n_ctx=256), name="ai/bad:1")
    assert not isinstance(caught.value, RuntimeCrashed), caught.value
    assert "could not load bad.gguf" in str(caught.value)


def test_the_worker_ends_when_its_parent_closes_the_socket() -> None:
    worker = _worker()
    worker.conn.close()
    assert worker.proc.wait(timeout=30) == 0
