"""OpenAI's API: ``/v1/models`` (the store), ``/v1/chat/completions`` and ``/v1/completions`` (streamed as
server-sent events or whole), ``/v1/embeddings`` (floats or base64)."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from aiohttp import web

from modelctl.errors import ModelctlError, UsageError
from modelctl.services.serve import requests as req
from modelctl.services.serve.pool import Answer, Generation
from modelctl.services.serve.replies import EventStream, error_body
from modelctl.services.serve.state import server


async def models(request: web.Request) -> web.Response:
    srv = server(request)
    found = await srv.pool.call(srv.catalog.models)
    data = [_model(m.short, srv.started) for m in found]
    return web.json_response({"object": "list", "data": data})


async def model(request: web.Request) -> web.Response:
    srv = server(request)
    found = await srv.pool.call(srv.catalog.identify, request.match_info["model"])
    return web.json_response(_model(request.match_info["model"] or found.short, srv.started))


def _model(name: str, created: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": "modelctl"}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    messages = req.messages(doc.get("messages"))
    req.refuse_unsupported(doc, "tools", "functions", "audio", "prediction")
    _one_choice(doc)
    fmt = doc.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise UsageError("response_format other than text is not supported", hint="drop response_format")
    async with srv.pool.lease(name) as lease:
        sampling = req.sampling(lease.placement.sampling, doc, max_tokens=("max_completion_tokens", "max_tokens"))
        chat = req.with_system(messages, lease.placement.system)
        generation = lease.stream(lambda engine: engine.chat(chat, sampling))
        return await _respond(request, generation, name, doc, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise UsageError("'prompt' is not a string", hint="send one prompt as a string")
    req.refuse_unsupported(doc, "suffix", "echo", "logprobs")
    _one_choice(doc)
    async with srv.pool.lease(name) as lease:
        sampling = req.sampling(lease.placement.sampling, doc)
        generation = lease.stream(lambda engine: engine.generate(prompt, sampling))
        return await _respond(request, generation, name, doc, chat=False)


async def _respond(
    request: web.Request, generation: Generation, name: str, doc: dict[str, Any], *, chat: bool
) -> web.StreamResponse:
    """A chat or text completion's answer, streamed as server-sent events or whole; the generation closed either way."""
    try:
        if doc.get("stream") is True:
            return await _stream(request, generation, name, doc, chat=chat)
        text = await generation.text()
        answer = _answered(generation)
        reason = finish_reason(answer)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
        else:
            choice = {"text": text, "index": 0, "logprobs": None}
        return web.json_response(
            {
                "id": _id("chatcmpl" if chat else "cmpl"),
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": name,
                "choices": [choice | {"finish_reason": reason}],
                "usage": usage(answer),
            }
        )
    finally:
        await generation.close()


async def embeddings(request: web.Request) -> web.Response:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    texts = req.inputs(doc)
    encoding = doc.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise UsageError(f"encoding_format {encoding!r} is not supported", hint="use float or base64")
    async with srv.pool.lease(name) as lease:
        vectors, tokens = await lease.embed(texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v) if encoding == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    return web.json_response(
        {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )


def _encoded(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _one_choice(doc: dict[str, Any]) -> None:
    if doc.get("n") not in (None, 1):
        raise UsageError("'n' other than 1 is not supported", hint="ask for one choice per request")


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _answered(generation: Generation) -> Answer:
    if generation.answer is None:  # pragma: no cover - the iteration ended, so the answer exists
        raise ModelctlError("the answer ended before it started")
    return generation.answer


def finish_reason(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def usage(answer: Answer) -> dict[str, int]:
    completion = answer.stats.completion_tokens
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
    }


async def _stream(
    request: web.Request, generation: Generation, name: str, doc: dict[str, Any], *, chat: bool
) -> web.StreamResponse:
    """Server-sent events: a chunk per piece, a last chunk with the finish reason, usage if asked, ``[DONE]``.
    The first piece is awaited before the headers go, so that a refusal (a prompt too long) is still a 400."""
    pieces = aiter(generation)
    piece: str | None = await anext(pieces, None)
    events = EventStream(request)
    base: dict[str, Any] = {
        "id": _id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": name,
    }

    def chunk(text: str | None, finish: str | None = None, *, role: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if role else {}
            if text and not role:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    try:
        if chat:
            await events.send(chunk(None, role=True))
        while piece is not None:
            await events.send(chunk(piece))
            piece = await anext(pieces, None)
    except ModelctlError as exc:  # the worker died mid-answer: say so in the stream
        await events.send(error_body(exc, "openai"))
        return await events.end()
    answer = _answered(generation)
    await events.send(chunk(None, finish_reason(answer)))
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        await events.send({**base, "choices": [], "usage": usage(answer)})
    await events.send("[DONE]")
    return await events.end()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/models", models),
        web.get("/v1/models/{model:.+}", model),
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
    ]
