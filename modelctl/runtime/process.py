"""The parent's side of the runtime worker: an engine whose model lives in a child process.

:class:`WorkerEngine` offers what the in-process :class:`~modelctl.runtime.engine.Engine` offers (count, chat,
complete, the model's facts), so the chat and one-shot answers do not care where llama.cpp runs. When the worker
dies, every call raises :class:`~modelctl.errors.RuntimeCrashed` naming the signal, the phase (load, prompt,
generation) and the settings; the caller may start a new worker and go on (the chat does).

Timings are taken here, not in the worker: time to first token runs from sending the request to receiving the
first piece, so the cost of the process boundary is inside the numbers users see.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import IO, Any

from modelctl.errors import ModelctlError, NotFound, RuntimeCrashed, UsageError
from modelctl.runtime.conversation import Message, Sampling, Stats
from modelctl.runtime.engine import LoadSpec, completion

SIGNALS = {
    "SIGSEGV": "segmentation fault",
    "SIGABRT": "aborted",
    "SIGILL": "illegal instruction",
    "SIGBUS": "bus error",
    "SIGFPE": "arithmetic error",
    "SIGKILL": "killed, as the kernel's out-of-memory killer does",
    "SIGTERM": "terminated",
}
PHASES = {"load": "loading", "prompt": "reading the prompt", "generation": "generating"}
_ERRORS: dict[str, type[ModelctlError]] = {"UsageError": UsageError, "NotFound": NotFound}
CLOSE_TIMEOUT = 5.0


class WorkerEngine:
    """One model loaded in a worker process. Not thread-safe: one answer at a time, like the Engine."""

    def __init__(self, spec: LoadSpec, *, name: str) -> None:
        self.spec = spec
        self.name = name
        self._phase = "load"
        self._crash: RuntimeCrashed | None = None
        self._pending = False
        """An answer was abandoned mid-stream (a second Ctrl-C): its rest must be read before the next request."""
        # llama.cpp's last words (an assertion) for the crash report; closed in close()
        self._log: IO[bytes] | None = None if spec.verbose else tempfile.TemporaryFile()  # noqa: SIM115
        ours, theirs = socket.socketpair()
        with theirs:
            out = self._log.fileno() if self._log is not None else sys.stderr.fileno()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "modelctl.runtime.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                process_group=0,  # the terminal's Ctrl-C is the parent's to handle
            )
        self._conn = Connection(ours.detach())
        try:
            self._send(("load", spec))
            ready = self._expect("ready")
        except BaseException:
            self.close()
            raise
        facts: dict[str, Any] = ready[1]
        self.pid: int = facts["pid"]
        self.n_ctx: int = facts["n_ctx"]
        self.n_ctx_train: int = facts["n_ctx_train"]
        self.weights_bytes: int = facts["weights_bytes"]
        self.template: str | None = facts["template"]
        self.template_source: str = facts["template_source"]
        self._phase = "idle"

    # -- requests ------------------------------------------------------------------------------------------

    def count(self, messages: list[Message]) -> int:
        """Tokens of the prompt these messages render to, as the worker's generation sees it."""
        self._settle()
        self._send(("count", messages))
        return int(self._expect("ok")[1])

    def chat(self, messages: list[Message], sampling: Sampling) -> WorkerReply:
        """Start an answer; iterate the returned reply for its text as it is generated."""
        self._settle()
        sent = time.perf_counter()
        self._phase = "prompt"
        self._send(("chat", messages, sampling))
        started = self._expect("started")
        return WorkerReply(self, prompt_tokens=int(started[1]), sent=sent)

    def complete(self, messages: list[Message], sampling: Sampling, *, model: str) -> dict[str, Any]:
        """A whole answer as an OpenAI ``chat.completion`` object (``modelctl run --json``)."""
        return completion(self.chat(messages, sampling), model=model)

    def close(self) -> None:
        """Unload the model and end the worker (killed if it does not end within a few seconds)."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._conn.send(("close",))
            try:
                self._proc.wait(CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._conn.close()
        if self._log is not None:
            self._log.close()

    # -- the wire ------------------------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._crash is not None:
            raise self._crash
        try:
            self._conn.send(message)
        except OSError:
            raise self._died() from None

    def _recv(self) -> tuple[Any, ...]:
        if self._crash is not None:
            raise self._crash
        try:
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if message[0] == "fatal":
            raise self._died(detail=f"a Python error in the worker: {message[1]}")
        if message[0] == "error":
            self._phase = "idle"
            kind, text, hint = message[1:4]
            raise _ERRORS.get(kind, ModelctlError)(text, hint=hint)
        return message

    def _expect(self, kind: str) -> tuple[Any, ...]:
        message = self._recv()
        if message[0] != kind:
            raise ModelctlError(f"the runtime worker answered {message[0]!r} where {kind!r} was expected")
        return message

    def _settle(self) -> None:
        """Read the rest of an abandoned answer (cancelled), so the next request gets its own replies."""
        if not self._pending:
            return
        with contextlib.suppress(OSError):
            self._conn.send(("cancel",))
        while self._recv()[0] != "end":
            pass
        self._pending = False
        self._phase = "idle"

    def _died(self, *, detail: str | None = None) -> RuntimeCrashed:
        """The worker is gone (or going): reap it and describe how it ended."""
        phase = self._phase
        try:
            code = self._proc.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        name: str | None = None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"{name}, {SIGNALS[name]}" if name in SIGNALS else name
        else:
            what = detail or f"exit status {code}"
        said = _last_words(self._log)
        message = f"the runtime crashed ({what}) while {PHASES.get(phase, phase)} {self.name} ({self.spec.describe()})"
        if said:
            message += f"; llama.cpp said: {said}"
        hint = "re-run with --debug to see llama.cpp's log; try a smaller --ctx-size, --gpu-layers 0"
        hint += " or MODELCTL_CPU_BUFFERS=none"
        self._crash = RuntimeCrashed(message, hint=hint, signal=name, phase=phase)
        return self._crash


class WorkerReply:
    """One streamed answer from the worker. Iterate it for text pieces; afterwards ``text``, ``stats``."""

    def __init__(self, engine: WorkerEngine, *, prompt_tokens: int, sent: float) -> None:
        self._engine = engine
        self._sent = sent
        self.prompt_tokens = prompt_tokens
        self.text = ""
        self.id: str | None = None
        self.finish_reason: str | None = None
        self.cancelled = False
        self._stats: Stats | None = None

    def cancel(self) -> None:
        """End the answer after the piece in progress (safe to call from a signal handler)."""
        if self.cancelled:
            return
        self.cancelled = True
        with contextlib.suppress(OSError):
            self._engine._conn.send(("cancel",))

    @property
    def stats(self) -> Stats:
        if self._stats is None:
            raise RuntimeError("the reply has not been streamed yet")
        return self._stats

    def __iter__(self) -> Iterator[str]:
        engine = self._engine
        first: float | None = None
        ended = False
        engine._pending = True
        try:
            while True:
                message = engine._recv()
                if message[0] == "piece":
                    if first is None:
                        first = time.perf_counter()
                        engine._phase = "generation"
                    yield message[1]
                elif message[0] == "end":
                    ended = True
                    break
        finally:
            if ended:
                engine._pending = False
                engine._phase = "idle"
        done = time.perf_counter()
        result: dict[str, Any] = message[1]
        self.id = result["id"]
        self.finish_reason = "interrupted" if self.cancelled else result["finish_reason"]
        self.text = result["text"]
        theirs = result["stats"]
        self._stats = Stats(
            prompt_tokens=theirs["prompt_tokens"],
            completion_tokens=theirs["completion_tokens"],
            time_to_first_token=(first or done) - self._sent,
            generation_seconds=done - (first or done),
            decoded_tokens=theirs["decoded_tokens"],
        )


def _last_words(log: IO[bytes] | None, limit: int = 64 << 10) -> str | None:
    """The last line llama.cpp wrote before dying (an assertion, an abort message), if it wrote one."""
    if log is None:
        return None
    try:
        size = log.seek(0, 2)
        log.seek(max(0, size - limit))
        tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def start(spec: LoadSpec, *, name: str) -> WorkerEngine:
    """Start a worker and load ``spec`` in it (seconds for large models); RuntimeCrashed if the load dies."""
    return WorkerEngine(spec, name=name)
