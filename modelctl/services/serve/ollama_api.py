"""Ollama's API under ``/api``: tags, show, chat, generate, embed, ps, pull (progress streamed), delete, version.

Answers stream as one JSON object per line unless ``"stream": false``; the last one has ``done: true`` and the
timings in nanoseconds, as Ollama's clients read them. ``options`` give the sampling values (``num_predict`` is
the answer's length); ``num_ctx`` is not taken per request: a model's context is the one the fit check chose at
its first load, so that a request cannot make a loaded model reload, or grow past what fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from modelctl import __version__, reference
from modelctl.errors import ModelctlError, NotFound, UsageError
from modelctl.services.serve import requests as req
from modelctl.services.serve import scheduler
from modelctl.services.serve.catalog import Listed
from modelctl.services.serve.openai_api import finish_reason
from modelctl.services.serve.pool import Generation, Lease
from modelctl.services.serve.replies import Forbidden, LineStream
from modelctl.services.serve.state import Server, server

FOREVER = "2318-01-01T00:00:00Z"
"""What Ollama shows as the expiry of a model kept loaded for ever."""


def _now() -> str:
    return _iso(time.time())


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def _keep_alive(doc: dict[str, Any]) -> float | None:
    try:
        return scheduler.keep_alive(doc.get("keep_alive"))
    except ValueError:
        raise UsageError(
            f"keep_alive {doc.get('keep_alive')!r} is not a duration", hint='use seconds or e.g. "5m", "1h", -1'
        ) from None


def _options(doc: dict[str, Any]) -> dict[str, Any]:
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise UsageError("'options' is not an object", hint='e.g. {"temperature": 0}')
    return options


def _details(model: Listed) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": model.format,
        "family": model.architecture or "",
        "families": [model.architecture] if model.architecture else None,
        "parameter_size": model.parameters or "",
        "quantization_level": model.quantization or "",
    }


def _digest(key: str) -> str:
    return key.split(":", 1)[1] if key.startswith("sha") else key


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def tags(request: web.Request) -> web.Response:
    srv = server(request)
    found = await srv.pool.call(srv.catalog.models)
    return web.json_response(
        {
            "models": [
                {
                    "name": m.short,
                    "model": m.short,
                    "modified_at": m.created or _iso(srv.started),
                    "size": m.size,
                    "digest": _digest(m.key),
                    "details": _details(m),
                }
                for m in found
            ]
        }
    )


async def show(request: web.Request) -> web.Response:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc) if doc.get("model") else req.model_name(doc, "name")
    found = await srv.pool.call(srv.catalog.identify, name)
    slot = srv.pool.slots.get(found.key)
    info: dict[str, Any] = {"general.architecture": found.architecture}
    template = ""
    if slot is not None:
        info[f"{found.architecture}.context_length"] = slot.placement.load.n_ctx
        template = slot.placement.details.get("template") or ""
    return web.json_response(
        {
            "modelfile": f"FROM {found.name}\n",
            "parameters": "",
            "template": template,
            "details": _details(found),
            "model_info": info,
            "capabilities": ["completion", "embedding"],
            "modified_at": found.created or _iso(srv.started),
        }
    )


async def ps(request: web.Request) -> web.Response:
    srv = server(request)
    models = []
    for slot in list(srv.pool.slots.values()):
        if slot.state != "ready":
            continue
        info = slot.info()
        placement = slot.placement
        gpu = sum(size for device, size in placement.needs.items() if device != "CPU RAM")
        expires = FOREVER if slot.keep_alive == float("inf") else _iso(info["expires_at"] or time.time())
        details = placement.details
        listed = Listed(
            key=placement.key,
            name=placement.name,
            short=placement.short,
            size=0,
            created=None,
            parameters=details.get("parameter_size"),
            quantization=details.get("quantization_level"),
            architecture=details.get("family"),
        )
        models.append(
            {
                "name": placement.short,
                "model": placement.short,
                "size": sum(placement.needs.values()),
                "digest": _digest(placement.key),
                "details": _details(listed),
                "expires_at": expires,
                "size_vram": gpu,
                "context_length": placement.load.n_ctx,
            }
        )
    return web.json_response({"models": models})


def _timings(generation: Generation, started: float, loaded: float) -> dict[str, Any]:
    answer = generation.answer
    stats = answer.stats if answer is not None else None
    end = time.monotonic()
    first = generation.first_piece or end
    return {
        "total_duration": int((end - started) * 1e9),
        "load_duration": int((loaded - started) * 1e9),
        "prompt_eval_count": answer.prompt_tokens if answer is not None else 0,
        "prompt_eval_duration": int((first - generation.started) * 1e9),
        "eval_count": stats.completion_tokens if stats is not None else 0,
        "eval_duration": int((end - first) * 1e9),
    }


async def _answer(
    request: web.Request,
    lease: Lease,
    generation: Generation,
    name: str,
    doc: dict[str, Any],
    *,
    chat: bool,
    started: float,
    loaded: float,
) -> web.StreamResponse:
    """The answer, streamed line by line (Ollama's default) or whole (``"stream": false``)."""

    def piece(text: str) -> dict[str, Any]:
        head: dict[str, Any] = {"model": name, "created_at": _now()}
        if chat:
            return {**head, "message": {"role": "assistant", "content": text}, "done": False}
        return {**head, "response": text, "done": False}

    def last(text: str) -> dict[str, Any]:
        answer = generation.answer
        reason = finish_reason(answer) if answer is not None else "stop"
        return {**piece(text), "done": True, "done_reason": reason, **_timings(generation, started, loaded)}

    if doc.get("stream") is False:
        return web.json_response(last(await generation.text()))
    pieces = aiter(generation)
    first: str | None = await anext(pieces, None)
    lines = LineStream(request)
    try:
        while first is not None:
            await lines.send(piece(first))
            first = await anext(pieces, None)
    except ModelctlError as exc:
        await lines.send({"error": str(exc)})
        return await lines.end()
    await lines.send(last(""))
    return await lines.end()


async def chat(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    req.refuse_unsupported(doc, "tools", "format")
    keep = _keep_alive(doc)
    raw_messages = doc.get("messages")
    if not raw_messages:  # Ollama's way to load (or, with keep_alive 0, unload) a model
        return await _load_only(srv, name, keep, chat=True)
    messages = req.messages(raw_messages)
    options = _options(doc)
    started = time.monotonic()
    async with srv.pool.lease(name, keep_alive=keep) as lease:
        loaded = time.monotonic()
        sampling = req.sampling(lease.placement.sampling, options, max_tokens=("num_predict",))
        turns = req.with_system(messages, lease.placement.system)
        generation = lease.stream(lambda engine: engine.chat(turns, sampling))
        try:
            return await _answer(request, lease, generation, name, doc, chat=True, started=started, loaded=loaded)
        finally:
            await generation.close()


async def generate(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    req.refuse_unsupported(doc, "images", "format", "suffix")
    keep = _keep_alive(doc)
    prompt = doc.get("prompt") or ""
    if not isinstance(prompt, str):
        raise UsageError("'prompt' is not a string", hint="send the prompt as a string")
    if not prompt:
        return await _load_only(srv, name, keep, chat=False)
    system = doc.get("system")
    if system is not None and not isinstance(system, str):
        raise UsageError("'system' is not a string", hint="send the system prompt as a string")
    options = _options(doc)
    started = time.monotonic()
    async with srv.pool.lease(name, keep_alive=keep) as lease:
        loaded = time.monotonic()
        sampling = req.sampling(lease.placement.sampling, options, max_tokens=("num_predict",))
        if doc.get("raw") is True:
            generation = lease.stream(lambda engine: engine.generate(prompt, sampling))
        else:
            turns = req.with_system([{"role": "user", "content": prompt}], system or lease.placement.system)
            generation = lease.stream(lambda engine: engine.chat(turns, sampling))
        try:
            return await _answer(request, lease, generation, name, doc, chat=False, started=started, loaded=loaded)
        finally:
            await generation.close()


async def _load_only(srv: Server, name: str, keep: float | None, *, chat: bool) -> web.Response:
    if keep == 0:
        with contextlib.suppress(NotFound):
            await srv.pool.stop(name)
        reason = "unload"
    else:
        async with srv.pool.lease(name, keep_alive=keep):
            pass
        reason = "load"
    body: dict[str, Any] = {"model": name, "created_at": _now(), "done": True, "done_reason": reason}
    body.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return web.json_response(body)


async def embed(request: web.Request) -> web.Response:
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    texts = req.inputs(doc)
    started = time.monotonic()
    async with srv.pool.lease(name, keep_alive=_keep_alive(doc)) as lease:
        loaded = time.monotonic()
        vectors, tokens = await lease.embed(texts)
    end = time.monotonic()
    return web.json_response(
        {
            "model": name,
            "embeddings": vectors,
            "total_duration": int((end - started) * 1e9),
            "load_duration": int((loaded - started) * 1e9),
            "prompt_eval_count": tokens,
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """The older single-prompt endpoint (``ollama.embeddings``)."""
    srv = server(request)
    doc = await req.body(request)
    name = req.model_name(doc)
    prompt = doc.get("prompt")
    if not isinstance(prompt, str):
        raise UsageError("'prompt' is not a string", hint='e.g. "prompt": "hello"')
    async with srv.pool.lease(name, keep_alive=_keep_alive(doc)) as lease:
        vectors, _ = await lease.embed([prompt])
    return web.json_response({"embedding": vectors[0]})


async def pull(request: web.Request) -> web.StreamResponse:
    srv = server(request)
    if not srv.options.allow_pull:
        raise Forbidden("/api/pull is off on this server", hint="serve with --allow-pull to let clients pull models")
    doc = await req.body(request)
    name = req.model_name(doc)
    ref = reference.parse(name)
    if doc.get("stream") is False:
        await srv.pool.call(_pull, srv, ref, None)
        return web.json_response({"status": "success"})
    lines = LineStream(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def post(doc: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, doc)

    await lines.send({"status": "pulling manifest"})
    task = loop.run_in_executor(srv.executor, _pull_then_end, srv, ref, post)
    while (event := await queue.get()) is not None:
        await lines.send(event)
    try:
        await task
    except ModelctlError as exc:
        await lines.send({"error": str(exc)})
        return await lines.end()
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        await lines.send({"status": status})
    return await lines.end()


def _pull_then_end(srv: Server, ref: reference.Reference, post: Any) -> None:
    try:
        _pull(srv, ref, post)
    finally:
        post(None)


def _pull(srv: Server, ref: reference.Reference, post: Any) -> None:
    from modelctl.services.pull import pull as pull_models  # the download engine only when a client pulls

    pull_models(srv.config, [ref], _Progress(post))
    srv.catalog.forget()


class _Progress:
    """The pull's reporter, turned into Ollama's progress lines."""

    def __init__(self, post: Any) -> None:
        self.post = post or (lambda doc: None)
        self._last: dict[str, float] = {}

    def resolved(self, ref: Any, model: Any, to_fetch: int) -> None:
        pass

    def progress(self, event: Any) -> None:
        digest = str(event.digest)
        now = time.monotonic()
        if event.done < event.total and now - self._last.get(digest, 0.0) < 0.2:
            return  # at most five lines a second per blob
        self._last[digest] = now
        self.post(
            {
                "status": f"pulling {digest.split(':')[-1][:12]}",
                "digest": digest,
                "total": event.total,
                "completed": event.done,
            }
        )

    def warning(self, message: str) -> None:
        self.post({"status": f"warning: {message}"})


async def delete(request: web.Request) -> web.Response:
    srv = server(request)
    if not srv.options.allow_delete:
        raise Forbidden("/api/delete is off on this server", hint="serve with --allow-delete to let clients delete")
    doc = await req.body(request)
    name = req.model_name(doc) if doc.get("model") else req.model_name(doc, "name")
    with contextlib.suppress(NotFound):
        await srv.pool.stop(name)
    await srv.pool.call(functools.partial(_remove, srv, name))
    return web.json_response({})


def _remove(srv: Server, name: str) -> None:
    from modelctl.services.models import remove

    remove(srv.config, [name])
    srv.catalog.forget()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/version", version),
        web.get("/api/tags", tags),
        web.post("/api/show", show),
        web.get("/api/ps", ps),
        web.post("/api/chat", chat),
        web.post("/api/generate", generate),
        web.post("/api/embed", embed),
        web.post("/api/embeddings", embeddings),
        web.post("/api/pull", pull),
        web.delete("/api/delete", delete),
    ]
