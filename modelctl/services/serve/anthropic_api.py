"""Anthropic's Messages API: ``/v1/messages`` (whole, or streamed as its named server-sent events) and
``/v1/messages/count_tokens``."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from modelctl.errors import ModelctlError, UsageError
from modelctl.runtime.conversation import Message
from modelctl.services.serve import requests as req
from modelctl.services.serve.pool import Answer, Generation
from modelctl.services.serve.replies import EventStream, error_body
from modelctl.services.serve.state import server


def _conversation(doc: dict[str, Any]) -> list[Message]:
    """The system prompt (a string or text blocks) in front of the user and assistant turns."""
    turns = req.messages(doc.get("messages"), roles=("user", "assistant"))
    system = doc.get("system")
    if system is None:
        return turns
    return [{"role": "system", "content": req.text_of(system, "system")}, *turns]


def _stop_reason(answer: Answer | None) -> str:
    return "max_tokens" if answer is not None and answer.finish_reason == "length" else "end_turn"


def _usage(answer: Answer | None) -> dict[str, int]:
    if answer is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": answer.prompt_tokens, "output_tokens": answer.stats.completion_tokens}


async def messages(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    if req.whole(doc, "max_tokens", 1) is None:
        raise UsageError("'max_tokens' is missing", hint="give the longest answer you want, in tokens")
    req.refuse_unsupported(doc, "tools")
    conversation = _conversation(doc)
    async with srv.pool.lease(name) as lease:
        sampling = req.sampling(lease.placement.sampling, doc, stop="stop_sequences")
        turns = req.with_system(conversation, lease.placement.system)
        generation = lease.stream(lambda engine: engine.chat(turns, sampling))
        try:
            if doc.get("stream") is True:
                return await _stream(request, generation, name)
            text = await generation.text()
            return web.json_response(
                {
                    "id": _id(),
                    "type": "message",
                    "role": "assistant",
                    "model": name,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": _stop_reason(generation.answer),
                    "stop_sequence": None,
                    "usage": _usage(generation.answer),
                }
            )
        finally:
            await generation.close()


async def _stream(request: web.Request, generation: Generation, name: str) -> web.StreamResponse:
    """message_start, content_block_start, a content_block_delta per piece, content_block_stop, message_delta
    (stop reason, usage), message_stop."""
    pieces = aiter(generation)
    piece: str | None = await anext(pieces, None)
    events = EventStream(request)
    prompt_tokens = generation.answer.prompt_tokens if generation.answer is not None else 0
    message: dict[str, Any] = {
        "id": _id(),
        "type": "message",
        "role": "assistant",
        "model": name,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
    }
    await events.send({"type": "message_start", "message": message}, event="message_start")
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    await events.send(block, event="content_block_start")
    try:
        while piece is not None:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            await events.send(delta, event="content_block_delta")
            piece = await anext(pieces, None)
    except ModelctlError as exc:
        await events.send(error_body(exc, "anthropic"), event="error")
        return await events.end()
    answer = generation.answer
    await events.send({"type": "content_block_stop", "index": 0}, event="content_block_stop")
    ending = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
        "usage": {"output_tokens": _usage(answer)["output_tokens"]},
    }
    await events.send(ending, event="message_delta")
    await events.send({"type": "message_stop"}, event="message_stop")
    return await events.end()


async def count_tokens(request: web.Request) -> web.Response:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    conversation = _conversation(doc)
    async with srv.pool.lease(name) as lease:
        tokens = await lease.count(req.with_system(conversation, lease.placement.system))
    return web.json_response({"input_tokens": tokens})


def _id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/messages", messages),
        web.post("/v1/messages/count_tokens", count_tokens),
    ]
