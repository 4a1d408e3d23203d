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

from modelctl import errors
from modelctl.errors import ModelctlError, RuntimeCrashed
from modelctl.runtime.conversation import Message, Sampling, Stats
from modelctl.runtime.engine import Answer, LoadSpec, completion

SIGNALS = {
    "SIGSEGV": "segmentation fault",
    "SIGABRT": "aborted",
    "SIGILL": "illegal instruction",
    "SIGBUS": "bus error",
    "SIGFPE": "arithmetic error",
    "SIGKILL": "killed, as the kernel's out-of-memory killer does",
    "SIGTERM": "terminated",
}
PHASES = {"load": "loading", "prompt": "reading the prompt for", "generation": "generating with"}
_ERRORS: dict[str, type[ModelctlError]] = {
    cls.__name__: cls
    for cls in (errors.UsageError, errors.NotFound, errors.IntegrityError, errors.GGUFError, errors.DoesNotFit)
}
"""Refusals the worker sends back by name, raised here with their own exit code (others: ModelctlError)."""
CLOSE_TIMEOUT = 5.0


class Worker:
    """A worker process and the socket to it; describes the worker's death when the socket breaks."""

    def __init__(
        self, *, verbose: bool, name: str = "the model", settings: str = "", cpu_buffers: str = "auto"
    ) -> None:
        self.name = name
        """What it runs, for messages (the model's short reference)."""
        self.settings = settings
        """The load settings in one phrase, for crash reports."""
        self.cpu_buffers = cpu_buffers
        self.verbose = verbose
        self.phase = "load"
        self._crash: RuntimeCrashed | None = None
        self._hello: dict[str, Any] | None = None
        # llama.cpp's last words (an assertion) for the crash report; closed in close()
        self._log: IO[bytes] | None = None if verbose else tempfile.TemporaryFile()  # noqa: SIM115
        ours, theirs = socket.socketpair()
        with theirs:
            out = self._log.fileno() if self._log is not None else sys.stderr.fileno()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelctl.runtime.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                process_group=0,  # the terminal's Ctrl-C is the parent's to handle
            )
        self.conn = Connection(ours.detach())

    def hello(self) -> dict[str, Any]:
        """What the runtime can do (``gpu_offload``), as the worker reported once llama.cpp was imported."""
        if self._hello is None:
            self._hello = dict(self.expect("hello")[1])
        return self._hello

    def describe(self, *, name: str, settings: str, cpu_buffers: str) -> None:
        """Name the model and settings it is about to run, for crash reports."""
        self.name, self.settings, self.cpu_buffers = name, settings, cpu_buffers

    def send(self, message: tuple[Any, ...]) -> None:
        if self._crash is not None:
            raise self._crash
        try:
            self.conn.send(message)
        except OSError:
            raise self.died() from None

    def recv(self) -> tuple[Any, ...]:
        if self._crash is not None:
            raise self._crash
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            raise self.died() from None
        if message[0] == "fatal":
            raise self.died(detail=f"a Python error in the worker: {message[1]}")
        if message[0] == "error":
            self.phase = "idle"
            kind, text, hint = message[1:4]
            raise _ERRORS.get(kind, ModelctlError)(text, hint=hint)
        return message

    def expect(self, kind: str) -> tuple[Any, ...]:
        message = self.recv()
        if message[0] != kind:
            raise ModelctlError(f"the runtime worker answered {message[0]!r} where {kind!r} was expected")
        return message

    def close(self, request: tuple[Any, ...] | None = ("close",)) -> None:
        """End the worker: ask (``request``, or SIGTERM when None), then kill it if it has not ended in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if request is None:
                    self.proc.terminate()
                else:
                    self.conn.send(request)
            try:
                self.proc.wait(CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.conn.close()
        if self._log is not None:
            self._log.close()

    def died(self, *, detail: str | None = None) -> RuntimeCrashed:
        """The worker is gone (or going): reap it and describe how it ended."""
        phase = self.phase
        try:
            code = self.proc.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
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
        settings = f" ({self.settings})" if self.settings else ""
        message = f"the runtime crashed ({what}) while {PHASES.get(phase, phase)} {self.name}{settings}"
        if said:
            message += f"; llama.cpp said: {said}"
        hint = "re-run with --debug to see llama.cpp's log; try a smaller --ctx-size, --gpu-layers 0"
        if self.cpu_buffers == "all":
            hint += " or unset MODELCTL_CPU_BUFFERS (all uses llama.cpp's AMX path, which crashes on some Xeons)"
        else:
            hint += " or MODELCTL_CPU_BUFFERS=none"
        self._crash = RuntimeCrashed(message, hint=hint, signal=name, phase=phase)
        return self._crash


class WorkerEngine:
    """One model loaded in a worker process. Not thread-safe: one answer at a time, like the Engine."""

    def __init__(self, spec: LoadSpec, *, name: str, worker: Worker | None = None) -> None:
        self.spec = spec
        self.name = name
        self._pending = False
        """An answer was abandoned mid-stream (a second Ctrl-C): its rest must be read before the next request."""
        self._worker = worker or Worker(verbose=spec.verbose)
        self._worker.describe(name=name, settings=spec.describe(), cpu_buffers=spec.cpu_buffers)
        try:
            self._worker.hello()
            self._worker.send(("load", spec))
            ready = self._worker.expect("ready")
        except BaseException:
            self._worker.close()
            raise
        facts: dict[str, Any] = ready[1]
        self.pid: int = facts["pid"]
        self.n_ctx: int = facts["n_ctx"]
        self.n_ctx_train: int = facts["n_ctx_train"]
        self.weights_bytes: int = facts["weights_bytes"]
        self.template: str | None = facts["template"]
        self.template_source: str = facts["template_source"]
        self._worker.phase = "idle"

    def count(self, messages: list[Message]) -> int:
        """Tokens of the prompt these messages render to, as the worker's generation sees it."""
        self._settle()
        self._worker.send(("count", messages))
        return int(self._worker.expect("ok")[1])

    def chat(self, messages: list[Message], sampling: Sampling) -> WorkerReply:
        """Start an answer; iterate the returned reply for its text as it is generated."""
        self._settle()
        sent = time.perf_counter()
        self._worker.phase = "prompt"
        self._worker.send(("chat", messages, sampling))
        started = self._worker.expect("started")
        return WorkerReply(self._worker, self, prompt_tokens=int(started[1]), sent=sent)

    def generate(self, prompt: str, sampling: Sampling) -> WorkerReply:
        """Start a plain-text continuation of ``prompt`` (no chat template); iterate the reply for its text."""
        self._settle()
        sent = time.perf_counter()
        self._worker.phase = "prompt"
        self._worker.send(("complete", prompt, sampling))
        started = self._worker.expect("started")
        return WorkerReply(self._worker, self, prompt_tokens=int(started[1]), sent=sent)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One unit vector per text, and the tokens read."""
        self._settle()
        self._worker.phase = "prompt"
        self._worker.send(("embed", texts))
        answer: dict[str, Any] = self._worker.expect("ok")[1]
        self._worker.phase = "idle"
        return answer["vectors"], int(answer["tokens"])

    def complete(self, messages: list[Message], sampling: Sampling, *, model: str) -> dict[str, Any]:
        """A whole answer as an OpenAI ``chat.completion`` object (``modelctl run --json``)."""
        return completion(self.chat(messages, sampling), model=model)

    @property
    def alive(self) -> bool:
        """Whether the worker process still runs (it may have been killed while idle)."""
        return self._worker.proc.poll() is None

    def cancel(self) -> None:
        """Ask the worker to end the answer in progress, even before its first piece (safe from any thread)."""
        with contextlib.suppress(OSError):
            self._worker.conn.send(("cancel",))

    def close(self) -> None:
        """Unload the model and end the worker (killed if it does not end within a few seconds)."""
        self._worker.close()

    def _settle(self) -> None:
        """Read the rest of an abandoned answer (cancelled), so the next request gets its own replies."""
        if not self._pending:
            return
        with contextlib.suppress(OSError):
            self._worker.conn.send(("cancel",))
        while self._worker.recv()[0] != "end":
            pass
        self._pending = False
        self._worker.phase = "idle"


class WorkerReply(Answer):
    """One answer streamed from the worker."""

    def __init__(self, worker: Worker, engine: WorkerEngine, *, prompt_tokens: int, sent: float) -> None:
        super().__init__(prompt_tokens=prompt_tokens)
        self._worker = worker
        self._engine = engine
        self._sent = sent

    def cancel(self) -> None:
        """End the answer after the piece in progress (safe to call from a signal handler)."""
        if self.cancelled:
            return
        self.cancelled = True
        with contextlib.suppress(OSError):
            self._worker.conn.send(("cancel",))

    def __iter__(self) -> Iterator[str]:
        worker, engine = self._worker, self._engine
        first: float | None = None
        ended = False
        engine._pending = True
        try:
            while True:
                message = worker.recv()
                if message[0] == "piece":
                    if first is None:
                        first = time.perf_counter()
                        worker.phase = "generation"
                    yield message[1]
                elif message[0] == "end":
                    ended = True
                    break
        finally:
            if ended:
                engine._pending = False
                worker.phase = "idle"
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


def spawn(*, verbose: bool) -> Worker:
    """A worker process, started now so that its Python and llama.cpp start-up overlap the caller's work."""
    return Worker(verbose=verbose)


def start(spec: LoadSpec, *, name: str, worker: Worker | None = None) -> WorkerEngine:
    """Load ``spec`` in ``worker`` (a new one when None; seconds for large models); RuntimeCrashed if it dies."""
    return WorkerEngine(spec, name=name, worker=worker)
