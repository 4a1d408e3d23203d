"""A loaded model: llama-cpp-python's ``Llama`` with modelctl's settings, chat template and streaming stats.

``llama_cpp`` is imported inside :func:`load` only, so commands that never run a model never pay for it.
llama.cpp's load logs are hidden unless ``verbose`` (the CLI's ``--debug``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelctl import cpu
from modelctl.errors import ModelctlError, UsageError
from modelctl.runtime.buffers import applied
from modelctl.runtime.conversation import Message, Sampling, Stats

RANDOM_SEED = 0xFFFFFFFF
"""llama.cpp's LLAMA_DEFAULT_SEED: a fresh random seed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadSpec:
    """Everything llama.cpp needs to load a model; the fit check sized ``n_ctx`` and ``n_gpu_layers``."""

    model_path: Path
    n_ctx: int
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    n_cpu_moe: int = 0
    """The MoE layers (the first N) whose experts stay in host memory: the fit plan's choice (``--n-cpu-moe``)."""
    type_k: int = 1
    type_v: int = 1
    """ggml type ids of the KV cache (1 = f16), the fit check's cache type."""
    flash_attn: bool = False
    swa_full: bool = True
    n_threads: int | None = None
    """None: llama-cpp-python's default (half the CPUs for generation, all of them for the prompt)."""
    chat_template: str | None = None
    """A Jinja chat template that replaces the GGUF's own (the artifact's chat-template layer)."""
    verbose: bool = False
    cpu_buffers: str = "auto"
    """Extra CPU weight buffers (``modelctl.cpu``): auto (CPU_REPACK, never AMX), all (llama.cpp's default), none."""
    files: tuple[Path, ...] = ()
    """Every shard of the model (``model_path`` is the first), for the buffer choice's tensor overrides."""

    def llama_kwargs(self) -> dict[str, Any]:
        """What both ``llama_cpp.Llama`` and its server's ``ModelSettings`` take from this spec (the model path and
        ``swa_full``, which only ``Llama`` takes, aside)."""
        kwargs: dict[str, Any] = {
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "n_gpu_layers": self.n_gpu_layers,
            "type_k": self.type_k,
            "type_v": self.type_v,
            "flash_attn": self.flash_attn,
            "verbose": self.verbose,
        }
        if self.n_threads is not None:
            kwargs["n_threads"] = kwargs["n_threads_batch"] = self.n_threads
        return kwargs

    def describe(self) -> str:
        """The settings in one phrase, for crash reports."""
        cache = {1: "f16", 8: "q8_0", 2: "q4_0"}.get(self.type_k, str(self.type_k))
        experts = f"experts of {self.n_cpu_moe} layers in RAM, " if self.n_cpu_moe else ""
        return (
            f"ctx {self.n_ctx}, gpu layers {self.n_gpu_layers}, {experts}cache {cache}, "
            f"flash attention {'on' if self.flash_attn else 'off'}, cpu buffers {self.cpu_buffers}"
        )


class Engine:
    """One loaded model. Not thread-safe: one answer at a time."""

    def __init__(self, llm: Any, spec: LoadSpec, *, template: str | None, template_source: str) -> None:
        self._llm = llm
        self.spec = spec
        self.template = template
        """The Jinja chat template in use, if any."""
        self.template_source = template_source
        """Where the template came from: ``gguf``, ``artifact`` or ``builtin`` (llama-cpp-python's default)."""
        self._formatter: Any = None
        if template is not None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = llm.token_eos()
            bos = llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=_token_text(llm, eos),
                bos_token=_token_text(llm, bos),
                stop_token_ids=[eos],
            )
            # Generation renders with exactly the formatter that counts the prompt's tokens.
            llm.chat_handler = self._formatter.to_chat_handler()

    # -- facts ----------------------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def n_ctx_train(self) -> int:
        import llama_cpp

        return int(llama_cpp.llama_model_n_ctx_train(self._llm.model))

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._llm.metadata)

    @property
    def weights_bytes(self) -> int:
        """Bytes of the loaded weights, as llama.cpp counts them."""
        import llama_cpp

        return int(llama_cpp.llama_model_size(self._llm.model))

    # -- tokens ---------------------------------------------------------------------------------------------

    def count(self, messages: list[Message]) -> int:
        """Tokens of the prompt these messages render to (with the generation prompt), as generation sees it."""
        if self._formatter is not None:
            prompt = self._formatter(messages=messages).prompt
            return len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        # No template (llama-cpp-python's built-in format): content plus a small per-message overhead.
        body = "\n".join(m["content"] for m in messages)
        return len(self._llm.tokenize(body.encode("utf-8"), add_bos=True, special=False)) + 8 * len(messages)

    # -- generation -----------------------------------------------------------------------------------------

    def chat(self, messages: list[Message], sampling: Sampling) -> Reply:
        """Start an answer; iterate the returned Reply for its text as it is generated."""
        prompt_tokens = self.count(messages)
        room = self.n_ctx - prompt_tokens
        if room < 1:
            raise UsageError(
                f"the prompt ({prompt_tokens} tokens) fills the whole context window ({self.n_ctx})",
                hint="shorten it, or run with a larger --ctx-size",
            )
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        start = functools.partial(self._llm.create_chat_completion, messages=messages)
        return Reply(self._llm, start, sampling, max_tokens=max_tokens, prompt_tokens=prompt_tokens, chat=True)

    def generate(self, prompt: str, sampling: Sampling) -> Reply:
        """Continue ``prompt`` as plain text, no chat template (``/v1/completions``, Ollama's ``raw``)."""
        prompt_tokens = len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        room = self.n_ctx - prompt_tokens
        if room < 1:
            raise UsageError(
                f"the prompt ({prompt_tokens} tokens) fills the whole context window ({self.n_ctx})",
                hint="shorten it, or serve with a larger --ctx-size",
            )
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        start = functools.partial(self._llm.create_completion, prompt=prompt)
        return Reply(self._llm, start, sampling, max_tokens=max_tokens, prompt_tokens=prompt_tokens, chat=False)

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """One L2-normalised vector per input, and the tokens read.

        The context is created for generation; embeddings are switched on for this call only
        (``llama_set_embeddings``), so one loaded model answers both. A model without its own pooling (a generative
        model) gives a vector per token: they are averaged, as an embedding model with mean pooling would.
        """
        import llama_cpp

        llm = self._llm
        limit = min(self.n_ctx, int(llm.n_batch))
        counts = [len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)) for text in inputs]
        longest = max(counts, default=0)
        if longest > limit:
            raise UsageError(
                f"an input of {longest} tokens is longer than the {limit} one embedding can read",
                hint="split it into shorter inputs",
            )
        llm.context_params.embeddings = True
        llama_cpp.llama_set_embeddings(llm.ctx, True)
        try:
            vectors = [_pooled(llm.embed(text)) for text in inputs]
        finally:
            llama_cpp.llama_set_embeddings(llm.ctx, False)
            llm.context_params.embeddings = False
            llm.reset()  # embedding cleared the KV cache: the next prompt is read from its start
        return vectors, sum(counts)

    def complete(self, messages: list[Message], sampling: Sampling, *, model: str) -> dict[str, Any]:
        """A whole answer as an OpenAI ``chat.completion`` object (``modelctl run --json``)."""
        return completion(self.chat(messages, sampling), model=model)

    def close(self) -> None:
        self._llm.close()


class Answer:
    """One streamed answer, wherever it is generated (:class:`Reply` here, the worker's reply in the parent).

    Iterate it for text pieces; afterwards ``text``, ``finish_reason`` and ``stats``.
    """

    def __init__(self, *, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.text = ""
        self.id: str | None = None
        self.finish_reason: str | None = None
        self.cancelled = False
        self._stats: Stats | None = None

    @property
    def stats(self) -> Stats:
        if self._stats is None:
            raise RuntimeError("the reply has not been streamed yet")
        return self._stats

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError


def completion(reply: Answer, *, model: str) -> dict[str, Any]:
    """Stream ``reply`` to its end and return it as an OpenAI ``chat.completion`` object."""
    text = "".join(reply)
    stats = reply.stats
    return {
        "id": reply.id or f"chatcmpl-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "total_tokens": reply.prompt_tokens + stats.completion_tokens,
        },
        "timings": stats.to_json(),
    }


class Reply(Answer):
    """One answer streamed by llama-cpp-python in this process.

    :meth:`cancel` (from a signal handler, e.g. Ctrl-C) ends the stream after the piece in progress; the
    model's state stays consistent, so the next answer reuses the cached prompt prefix.
    """

    def __init__(
        self,
        llm: Any,
        start: Callable[..., Any],
        sampling: Sampling,
        *,
        max_tokens: int,
        prompt_tokens: int,
        chat: bool,
    ) -> None:
        super().__init__(prompt_tokens=prompt_tokens)
        self._llm = llm
        self._start = start
        """llama-cpp-python's streaming call with its prompt bound: chat completion, or plain completion."""
        self._sampling = sampling
        self._max_tokens = max_tokens
        self._chat = chat

    def __iter__(self) -> Iterator[str]:
        import llama_cpp

        llm = self._llm
        sampling = self._sampling
        llama_cpp.llama_perf_context_reset(llm.ctx)
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        stream = self._start(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            seed=RANDOM_SEED if sampling.seed is None else sampling.seed,
            max_tokens=self._max_tokens,
            stop=list(sampling.stop) or None,
            stream=True,
        )
        try:
            for chunk in stream:
                self.id = self.id or chunk.get("id")
                choice = chunk["choices"][0]
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
                piece = choice.get("delta", {}).get("content") if self._chat else choice.get("text")
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(piece)
                    yield piece
                if self.cancelled:
                    self.finish_reason = "interrupted"
                    break
        finally:
            stream.close()
            ended = time.perf_counter()
            self.text = "".join(pieces)
            perf = llama_cpp.llama_perf_context(llm.ctx)
            decoded = int(perf.n_eval)
            sampled = decoded + 1 if first is not None else 0
            completion = sampled - 1 if self.finish_reason == "stop" and sampled else sampled
            self._stats = Stats(
                prompt_tokens=int(perf.n_p_eval),
                completion_tokens=max(completion, 0),
                time_to_first_token=(first or ended) - started,
                generation_seconds=ended - (first or ended),
                decoded_tokens=decoded,
            )


def _pooled(output: list[Any]) -> list[float]:
    """One unit vector from ``Llama.embed``'s answer for one text: a vector, or a vector per token (averaged)."""
    rows: list[list[float]] = output if output and isinstance(output[0], list) else [output]
    width = len(rows[0]) if rows else 0
    mean = [sum(row[i] for row in rows) / len(rows) for i in range(width)]
    norm = math.sqrt(sum(x * x for x in mean)) or 1.0
    return [x / norm for x in mean]


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="replace")


def load(spec: LoadSpec) -> Engine:
    """Load the GGUF at ``spec.model_path``; ModelctlError (with the --debug hint) when llama.cpp refuses it."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelctlError(
            f"the llama.cpp runtime is not installed ({exc})",
            hint="install modelctl with its dependencies: pip install modelctl",
        ) from None

    try:
        with weight_buffers(spec):
            llm = llama_cpp.Llama(model_path=str(spec.model_path), swa_full=spec.swa_full, **spec.llama_kwargs())
    except (ValueError, RuntimeError) as exc:
        raise ModelctlError(
            f"llama.cpp could not load {spec.model_path.name}: {exc}",
            hint="re-run with --debug to see llama.cpp's log",
        ) from None
    return wrap(llm, spec)


def weight_buffers(spec: LoadSpec) -> contextlib.AbstractContextManager[None]:
    """The block in which ``Llama(...)`` loads with the spec's extra CPU weight buffers (see modelctl.cpu).

    With layers offloaded no tensor overrides are set: an override would pin a GPU layer's matrices to the host, and
    llama.cpp turns pipeline parallelism off whenever overrides exist. The CPU layers then load without CPU_REPACK on
    an AMX CPU (still never AMX), which the fit check's host figure already covers (it counts the repacked copy).
    The experts the plan keeps in host memory are overrides only when layers are offloaded (without a GPU they are
    there anyway, and the override would cost them their CPU_REPACK copy)."""

    choice = cpu.weight_buffers(spec.cpu_buffers, cpu.features())
    if spec.n_gpu_layers != 0 and choice.repack_by_override:
        choice = replace(choice, repack_by_override=False)
    experts = spec.n_cpu_moe if spec.n_gpu_layers != 0 else 0
    return applied(choice, spec.files or (spec.model_path,), experts)


def wrap(llm: Any, spec: LoadSpec) -> Engine:
    """An Engine around a loaded ``Llama``, with the chat template chosen: the artifact's, else the GGUF's own."""
    if spec.chat_template:
        return Engine(llm, spec, template=spec.chat_template, template_source="artifact")
    gguf_template = llm.metadata.get("tokenizer.chat_template")
    if gguf_template:
        return Engine(llm, spec, template=gguf_template, template_source="gguf")
    return Engine(llm, spec, template=None, template_source="builtin")
