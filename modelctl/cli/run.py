"""``modelctl run``: one-shot answers and the interactive chat (``serve`` shares its load flags: cli/serve.py).

The chat is a prompt_toolkit line editor with history; answers stream as they are generated. Heavy imports
(llama_cpp, prompt_toolkit) happen only once a command needs them.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from modelctl.cli import render
from modelctl.cli.context import debug, settings
from modelctl.cli.progress import reporter
from modelctl.errors import RuntimeCrashed, UsageError

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).

if TYPE_CHECKING:
    from modelctl.runtime.conversation import Conversation, Sampling
    from modelctl.runtime.process import WorkerEngine as Engine
    from modelctl.runtime.process import WorkerReply as Reply
    from modelctl.services.run import Prepared, RunOptions

MULTILINE = '"""'
HELP = """Available commands:
  /set system TEXT         set the system message
  /set temperature V       sampling temperature (0 = greedy); also top_p, top_k, seed, max_tokens
  /show info               the model, its settings and memory use
  /show template           the chat template in use
  /clear                   forget the conversation (keeps the system message)
  /bye                     exit (or Ctrl-D)
  /help, /?                this help

Use \"\"\" to begin and end a multi-line message. Ctrl-C stops an answer; Ctrl-D exits."""


def _gpu_layers(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter("use a whole number of layers or 'auto'") from None
    if number < -1:
        raise typer.BadParameter("use a whole number >= 0, -1 for all layers, or 'auto'")
    return number


def options_for(
    ctx_size: int | None, gpu_layers: str, cache_type: str, threads: int | None, no_pull: bool, force: bool
) -> RunOptions:
    from modelctl.services.run import RunOptions

    if cache_type not in CACHE_TYPES:
        raise UsageError(f"unknown cache type {cache_type!r}", hint="use " + ", ".join(CACHE_TYPES))
    return RunOptions(
        ctx_size=ctx_size,
        gpu_layers=_gpu_layers(gpu_layers),
        cache_type=cache_type,
        n_threads=threads,
        no_pull=no_pull,
        force=force,
        debug=debug(),  # the global --debug, in any position
    )


def _prepare(ref: str, options: RunOptions, *, quiet: bool) -> Prepared:
    from modelctl.services.run import prepare

    out = reporter(quiet=quiet)
    try:
        prepared = prepare(settings(), ref, options, out)
    finally:
        out.close()
    for note in prepared.notes:
        print(f"modelctl: note: {note}", file=sys.stderr)
    return prepared


CTX_SIZE = typer.Option(None, "--ctx-size", min=16, help="Context window in tokens (default: what fits).")
GPU_LAYERS = typer.Option("auto", "--gpu-layers", metavar="N|auto", help="Layers to offload to the GPU.")
NO_PULL = typer.Option(False, "--no-pull", help="Fail (exit 3) instead of pulling a missing model.")
CACHE_TYPES = ("f16", "q8_0", "q4_0")
CACHE_TYPE = typer.Option(
    "f16", "--cache-type", help="KV cache type: f16, q8_0 or q4_0 (quantised caches use flash attention)."
)
FORCE = typer.Option(False, "--force", help="Load even when the fit check says the model does not fit.")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads (default: llama-cpp-python's choice).")


def run(
    ref: str = typer.Argument(..., metavar="REF", help="Model reference (ai/smollm2) or GGUF file (./x.gguf)."),
    prompt: str | None = typer.Argument(None, metavar="[PROMPT]", help="Answer this and exit (no chat)."),
    ctx_size: int | None = CTX_SIZE,
    gpu_layers: str = GPU_LAYERS,
    cache_type: str = CACHE_TYPE,
    threads: int | None = THREADS,
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, help="Sampling temperature."),
    top_p: float | None = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling."),
    top_k: int | None = typer.Option(None, "--top-k", min=0, help="Top-k sampling (0: off)."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Random seed (default: random)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Longest answer in tokens."),
    system: str | None = typer.Option(None, "--system", help="System message."),
    no_pull: bool = NO_PULL,
    force: bool = FORCE,
    json_out: bool = typer.Option(False, "--json", help="Print an OpenAI-style chat.completion object."),
    verbose: bool = typer.Option(False, "--verbose", help="Print tokens/s and time to first token."),
) -> None:
    """Chat with a model, or answer PROMPT (plus piped stdin) and exit."""
    from modelctl.runtime.conversation import Conversation

    piped = None if sys.stdin.isatty() else sys.stdin.read()
    interactive = prompt is None and piped is None
    if not interactive and not (prompt or "").strip() and not (piped or "").strip():
        raise UsageError("nothing to answer: the prompt is empty", hint="give a PROMPT or pipe text to stdin")
    if json_out and interactive:
        raise UsageError("--json needs a PROMPT or piped input", hint='e.g. modelctl run --json ai/smollm2 "Hi"')

    from modelctl.services.run import start

    prepared = _prepare(ref, options_for(ctx_size, gpu_layers, cache_type, threads, no_pull, force), quiet=json_out)
    default = prepared.sampling  # the artifact's defaults (an Ollama params layer), else llama.cpp's
    sampling = dataclasses.replace(
        default,
        temperature=default.temperature if temperature is None else temperature,
        top_p=default.top_p if top_p is None else top_p,
        top_k=default.top_k if top_k is None else top_k,
        seed=default.seed if seed is None else seed,
        max_tokens=default.max_tokens if max_tokens is None else max_tokens,
    )
    engine = start(prepared)
    try:
        conversation = Conversation(system=system if system is not None else prepared.system)
        if interactive:
            _Chat(engine, prepared, conversation, sampling, verbose=verbose).loop()
            return
        question = "\n\n".join(part.strip("\n") for part in (prompt, piped) if part and part.strip())
        conversation.add("user", question)
        conversation.fit(engine.count, _budget(engine, sampling))
        if json_out:
            render.print_json(engine.complete(conversation.messages(), sampling, model=prepared.short))
            return
        reply = engine.chat(conversation.messages(), sampling)
        _stream(reply)
        if verbose:
            print(reply.stats.summary(), file=sys.stderr)
    finally:
        engine.close()


def _budget(engine: Engine, sampling: Sampling) -> int:
    from modelctl.runtime.conversation import prompt_budget

    return prompt_budget(engine.n_ctx, sampling.max_tokens)


def _stream(reply: Reply) -> None:
    """Write the answer as it is generated, ending with exactly one newline."""
    out = sys.stdout
    last = ""
    for piece in reply:
        out.write(piece)
        out.flush()
        last = piece
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()


class _Chat:
    """The interactive loop: read a message (or a /command), stream the answer, repeat."""

    def __init__(
        self, engine: Engine, prepared: Prepared, conversation: Conversation, sampling: Sampling, *, verbose: bool
    ) -> None:
        self.engine = engine
        self.prepared = prepared
        self.conversation = conversation
        self.sampling = sampling
        self.verbose = verbose

    def loop(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        home = settings().home
        history: Any
        try:
            home.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(home / "chat_history"))
        except OSError:
            history = InMemoryHistory()
        session: PromptSession[str] = PromptSession(history=history)
        print(f"{self.prepared.short}: type a message, /? for help, Ctrl-D or /bye to exit.", file=sys.stderr)
        while True:
            try:
                text = self._read(session)
            except KeyboardInterrupt:
                print("Use Ctrl-D or /bye to exit.")
                continue
            except EOFError:
                print()
                return
            if text is None or not text.strip():
                continue
            if text.lstrip().startswith("/") and not text.startswith(MULTILINE):
                if self._command(text.strip()):
                    return
                continue
            self._answer(text)

    def _read(self, session: Any) -> str | None:
        """One message; a line starting with triple quotes opens a block that a line ending with them closes."""
        line: str = session.prompt(">>> ")
        if not line.lstrip().startswith(MULTILINE):
            return line
        body = line.lstrip()[len(MULTILINE) :]
        if body.rstrip().endswith(MULTILINE):
            return body.rstrip()[: -len(MULTILINE)]
        lines = [body] if body else []
        while True:
            more: str = session.prompt("... ")
            if more.rstrip().endswith(MULTILINE):
                lines.append(more.rstrip()[: -len(MULTILINE)])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    def _answer(self, text: str) -> None:
        """Answer one message; if the runtime crashes, say so, reload the model and keep the conversation."""
        from modelctl.services.run import start

        try:
            self._answer_once(text)
        except RuntimeCrashed as exc:
            self.conversation.drop_last_user()
            print(f"\nmodelctl: error: {exc}", file=sys.stderr)
            print("Reloading the model; the conversation so far is kept. Ask again, or /bye.", file=sys.stderr)
            self.engine.close()
            self.engine = start(self.prepared)

    def _answer_once(self, text: str) -> None:
        conversation = self.conversation
        conversation.add("user", text)
        try:
            dropped = conversation.fit(self.engine.count, _budget(self.engine, self.sampling))
        except UsageError as exc:
            conversation.drop_last_user()
            print(f"modelctl: error: {exc}", file=sys.stderr)
            return
        if dropped:
            print(f"(dropped the {dropped} oldest messages to stay within the context window)", file=sys.stderr)
        reply = self.engine.chat(conversation.messages(), self.sampling)

        def on_interrupt(signum: int, frame: FrameType | None) -> None:
            if reply.cancelled:  # a second Ctrl-C while the prompt is still being read
                raise KeyboardInterrupt
            reply.cancel()

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            _stream(reply)
        except KeyboardInterrupt:
            print()
        finally:
            signal.signal(signal.SIGINT, previous)
        print()
        if reply.text:
            conversation.add("assistant", reply.text)
        else:
            conversation.drop_last_user()
        if self.verbose and reply.text:
            print(reply.stats.summary(), file=sys.stderr)

    def _command(self, text: str) -> bool:
        """Run a /command; True means exit."""
        words = text.split(maxsplit=2)
        name = words[0].lower()
        if name in ("/bye", "/exit", "/quit"):
            return True
        if name in ("/help", "/?"):
            print(HELP)
        elif name == "/clear":
            self.conversation.clear()
            print("Cleared the conversation.")
        elif name == "/set":
            self._set(words[1:])
        elif name == "/show":
            self._show(words[1] if len(words) > 1 else "")
        else:
            print(f"Unknown command {words[0]!r}. Type /? for help.")
        return False

    def _set(self, args: list[str]) -> None:
        if len(args) < 2:
            print("Usage: /set system TEXT | /set temperature|top_p|top_k|seed|max_tokens VALUE")
            return
        name, value = args[0].lower(), args[1].strip()
        if name == "system":
            self.conversation.system = value.strip('"') or None
            print("Set the system message.")
            return
        try:
            self.sampling = self.sampling.with_value(name, value)
        except UsageError as exc:
            print(f"modelctl: error: {exc}", file=sys.stderr)
            return
        print(f"Set {name} to {value}.")

    def _show(self, what: str) -> None:
        if what == "info":
            info = self.prepared.info()
            memory = info["fit"].get("memory", {}) if isinstance(info["fit"], dict) else {}
            rows = [
                ("model", info["model"]),
                ("id", info["id"]),
                ("architecture", info["architecture"] or "-"),
                ("parameters", info["parameters"] or "-"),
                ("quantization", info["quantization"] or "-"),
                ("context", f"{self.engine.n_ctx} tokens (trained: {self.engine.n_ctx_train})"),
                ("gpu layers", str(info["gpu_layers"])),
                ("weights", render.size(self.engine.weights_bytes)),
            ]
            if isinstance(memory, dict) and memory.get("total"):
                rows.append(("memory (fit estimate)", render.size(int(memory["total"]))))
            rows.append(("template", self.engine.template_source))
            rows.append(("sampling", ", ".join(f"{k}={v}" for k, v in self.sampling.to_json().items())))
            if self.conversation.system:
                rows.append(("system", self.conversation.system))
            tokens = self.engine.count(self.conversation.messages()) if self.conversation.turns else 0
            rows.append(("conversation", f"{len(self.conversation.turns)} messages, {tokens} tokens"))
            width = max(len(k) for k, _ in rows)
            for key, value in rows:
                print(f"  {key.ljust(width)}   {value}")
        elif what == "template":
            print(self.engine.template or "(no chat template: llama-cpp-python's built-in format)")
        else:
            print("Usage: /show info | /show template")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
