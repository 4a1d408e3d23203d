"""The runtime's worker process: one loaded model, driven by its parent over a socket, answers streamed back.

llama.cpp can die in ways Python cannot catch (a segfault in a kernel, an abort on a malformed tensor, the OOM
killer's SIGKILL). Running it here, in a child of the command, lets the parent report the death and go on (see
:mod:`modelctl.runtime.process`). The protocol is a sequence of pickled tuples on a
``multiprocessing.connection.Connection``; both ends are modelctl, started together, so pickle is safe here.

Parent -> worker: ``("load", LoadSpec)`` first, then ``("count", messages)``, ``("chat", messages, Sampling)``,
``("complete", prompt, Sampling)`` (plain text, no template), ``("embed", texts)``, ``("cancel",)`` (while an
answer streams), ``("close",)``.
Worker -> parent: ``("hello", capabilities)`` as soon as llama.cpp is imported; ``("ready", facts)``;
``("ok", value)``; for a chat or a completion ``("started", prompt_tokens)``, then ``("piece", text)``...,
``("end", result)``;
``("error", kind, message, hint)`` for a refusal (a ModelctlError); ``("fatal", text)`` for a Python error,
after which the worker exits with status 70.

    python -m modelctl.runtime.worker FD
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from modelctl.errors import ModelctlError
from modelctl.runtime.engine import Reply, load

EXIT_PYTHON_ERROR = 70
"""Exit status after a Python error in the worker (sysexits' EX_SOFTWARE)."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so a killed command leaves no model loaded."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere the worker ends when the socket closes
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(conn: Connection) -> int:
    """Load the model the first message names, then answer requests until ``close`` or the socket closes."""
    import llama_cpp  # before the first request: the import overlaps the parent's own preparations


    conn.send(("hello", {"gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}))
    try:
        first = conn.recv()
    except EOFError:
        return 0
    if first[0] != "load":
        raise RuntimeError(f"expected a load request, got {first[0]!r}")

    try:
        engine = load(first[1])
    except ModelctlError as exc:
        conn.send(("error", type(exc).__name__, exc.message, exc.hint))
        return 0
    conn.send(("ready", _facts(engine)))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return 0
        op = request[0]
        if op == "close":
            engine.close()
            return 0
        if op == "cancel":
            continue  # it arrived after its answer had ended
        try:
            if op == "count":
                conn.send(("ok", engine.count(request[1])))
            elif op == "chat":
                _stream(conn, engine.chat(request[1], request[2]))
            elif op == "complete":
                _stream(conn, engine.generate(request[1], request[2]))
            elif op == "embed":
                vectors, tokens = engine.embed(request[1])
                conn.send(("ok", {"vectors": vectors, "tokens": tokens}))
            else:
                raise RuntimeError(f"unknown request {op!r}")
        except ModelctlError as exc:
            conn.send(("error", type(exc).__name__, exc.message, exc.hint))


def _facts(engine: Any) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "n_ctx": engine.n_ctx,
        "n_ctx_train": engine.n_ctx_train,
        "weights_bytes": engine.weights_bytes,
        "template": engine.template,
        "template_source": engine.template_source,
    }


def _stream(conn: Connection, reply: Reply) -> None:
    """Send an answer piece by piece, stopping after the piece in progress when the parent cancels it."""
    conn.send(("started", reply.prompt_tokens))
    for piece in reply:
        conn.send(("piece", piece))
        while conn.poll():
            if conn.recv()[0] == "cancel":
                reply.cancel()
    stats = reply.stats
    conn.send(
        (
            "end",
            {
                "id": reply.id,
                "finish_reason": reply.finish_reason,
                "text": reply.text,
                "stats": {
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "time_to_first_token": stats.time_to_first_token,
                    "generation_seconds": stats.generation_seconds,
                    "decoded_tokens": stats.decoded_tokens,
                },
            },
        )
    )


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it cancels the answer by message
    _die_with_parent()
    conn = Connection(int(argv[0]))
    try:
        return serve(conn)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the parent went away
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
        with contextlib.suppress(OSError):
            conn.send(("fatal", detail))
        traceback.print_exc()
        return EXIT_PYTHON_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
