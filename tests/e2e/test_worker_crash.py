"""A runtime that dies mid-answer is reported, not fatal: real signals sent to the real worker process.

The model runs in a child of ``modelctl`` (``modelctl.runtime.worker``). These tests find that child through
``/proc`` while an answer is streaming, kill it with SIGSEGV or SIGKILL (what a llama.cpp crash and the OOM
killer do), and check the one-line error, exit code 9, and that the chat reloads the model and answers again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

REF = "ai/smollm2:135M-Q4_1"
ROOT = Path(__file__).resolve().parents[2]

STORY = "Write a long story about a lighthouse keeper and the sea, in many paragraphs."


def worker_of(pid: int, timeout: float = 60.0) -> int:
    """The pid of the runtime worker the modelctl process ``pid`` started (its ``modelctl.runtime.worker`` child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"modelctl.runtime.worker" in cmdline:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError(f"modelctl (pid {pid}) started no runtime worker within {timeout} s")


@pytest.mark.parametrize(
    ("signum", "words"),
    [(signal.SIGSEGV, "SIGSEGV, segmentation fault"), (signal.SIGKILL, "SIGKILL, killed")],
)
def test_one_shot_run_reports_a_worker_killed_mid_answer(
    command: list[str], env: dict[str, str], signum: int, words: str
) -> None:
    proc = subprocess.Popen(
        [*command, "run", REF, STORY, "--ctx-size", "1024", "--threads", "2", "--max-tokens", "600", "--seed", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        worker = worker_of(proc.pid)
        assert proc.stdout is not None
        first = proc.stdout.read(1)  # the answer has started streaming: we are in the generation phase
        assert first, "no answer was streamed before the kill"
        os.kill(worker, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 9, err
    lines = [line for line in err.decode().splitlines() if line.startswith("modelctl: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"the runtime crashed ({words}" in line
    assert "while generating with ai/smollm2:135M-Q4_1" in line
    assert "ctx 1024, gpu layers 0, cache f16" in line and "cpu buffers auto" in line
    assert "--debug" in line and "--gpu-layers 0" in line
    assert not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text()


READING = re.escape("\x1b[?2004h")
READ = re.escape("\x1b[?2004l")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
def test_chat_survives_a_worker_crash_and_answers_the_next_question(
    command: list[str], env: dict[str, str], signum: int
) -> None:
    child = pexpect.spawn(
        command[0],
        [*command[1:], "run", REF, "--ctx-size", "1024", "--threads", "2", "--temperature", "0", "--max-tokens", "400"],
        env={**env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"},
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        cwd=str(ROOT),
    )
    try:
        child.expect(READING)
        first_worker = worker_of(child.pid)
        child.sendline("What is the capital of France? Answer with one word.")
        child.expect(READ)
        child.expect(READING)
        first_answer = ANSI.sub("", child.before).strip()
        assert "Paris" in first_answer

        child.sendline(STORY)
        child.expect(READ)
        child.expect(r"\w+ \w+")  # the story is streaming
        os.kill(first_worker, signum)
        child.expect("the runtime crashed")
        child.expect("Reloading the model; the conversation so far is kept")
        child.expect(READING)

        second_worker = worker_of(child.pid)
        assert second_worker != first_worker
        child.sendline("Repeat the name of that capital city, one word.")
        child.expect(READ)
        child.expect(READING)
        answer = ANSI.sub("", child.before).strip()
        assert answer and "crashed" not in answer
        child.sendline("/show info")
        child.expect(READ)
        child.expect(READING)
        info = ANSI.sub("", child.before)
        assert re.search(r"conversation\s+4 messages", info), info  # the first exchange and the new one survive
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)
