"""What the three APIs share in a request: a JSON body, the model's name, messages as text, and sampling values.

Every bad value is a UsageError (HTTP 400) naming the field and what it should be; nothing here knows the dialect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from modelctl.errors import IntegrityError, UsageError
from modelctl.oci import safejson
from modelctl.runtime.conversation import Message, Sampling

MAX_STOPS = 16


MAX_VALUES = 1 << 22
"""JSON values a body may hold: long chats and token-id inputs fit; a flood of tiny values does not."""


async def body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, read with the bounded parser every outside document goes through (a body nested
    100,000 deep is a 400, never a RecursionError); aiohttp's ``client_max_size`` caps its size."""
    raw = await request.read()
    try:
        doc = safejson.loads(raw, what="request body", max_size=len(raw), max_items=MAX_VALUES)
    except IntegrityError as exc:
        raise UsageError(exc.message, hint="send one JSON object with Content-Type: application/json") from None
    if not isinstance(doc, dict):
        raise UsageError("the request body is not a JSON object", hint="send a JSON object")
    return doc


def model_name(doc: Mapping[str, Any], key: str = "model") -> str:
    name = doc.get(key)
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{key!r} is missing", hint="name a model, as GET /v1/models lists them")
    return name.strip()


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or a list of parts of which the ``text`` ones are kept."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif (
                isinstance(part, dict)
                and part.get("type") in ("text", "input_text")
                and isinstance(part.get("text"), str)
            ):
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") in ("image", "image_url", "input_image"):
                raise UsageError(f"{where} has an image", hint="modelctl serves text models: send text only")
        return "\n".join(texts)
    raise UsageError(f"{where} is not text", hint="give a string or a list of text parts")


def messages(items: Any, *, roles: tuple[str, ...] = ("system", "user", "assistant", "tool")) -> list[Message]:
    """Chat messages as ``{"role", "content"}`` strings (``developer`` is read as ``system``)."""
    if not isinstance(items, list) or not items:
        raise UsageError("'messages' is missing or empty", hint="send at least one message")
    found: list[Message] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UsageError(f"messages[{i}] is not an object", hint='use {"role": "user", "content": "..."}')
        role = item.get("role")
        role = "system" if role == "developer" else role
        if role not in roles:
            raise UsageError(f"messages[{i}] has the role {role!r}", hint=f"use one of: {', '.join(roles)}")
        if item.get("images"):
            raise UsageError(f"messages[{i}] has images", hint="modelctl serves text models: send text only")
        found.append({"role": str(role), "content": text_of(item.get("content"), f"messages[{i}]")})
    return found


def inputs(doc: Mapping[str, Any]) -> list[str]:
    """What to embed: ``input`` as a string or a list of strings (token arrays and ``dimensions`` are refused)."""
    texts = doc.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise UsageError("'input' is not a string or a list of strings", hint='e.g. "input": ["hello", "world"]')
    refuse_unsupported(doc, "dimensions")
    return texts


def with_system(found: list[Message], system: str | None) -> list[Message]:
    """The model's default system prompt in front, unless the request brings its own."""
    if system and not any(m["role"] == "system" for m in found):
        return [{"role": "system", "content": system}, *found]
    return found


def number(doc: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{key!r} is not a number", hint=f"use a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise UsageError(f"{key!r} is {value}, out of range", hint=f"use a number from {low:g} to {high:g}")
    return float(value)


def whole(doc: Mapping[str, Any], key: str, low: int, high: int = 1 << 31) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{key!r} is not a whole number", hint=f"use a whole number >= {low}")
    if not low <= value <= high:
        raise UsageError(f"{key!r} is {value}, out of range", hint=f"use a whole number from {low} to {high}")
    return value


def stops(value: Any, key: str = "stop") -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value) or len(value) > MAX_STOPS:
        raise UsageError(f"{key!r} is not a list of strings", hint=f"give at most {MAX_STOPS} strings")
    return tuple(s for s in value if s)


def sampling(
    defaults: Sampling,
    doc: Mapping[str, Any],
    *,
    max_tokens: tuple[str, ...] = ("max_tokens",),
    stop: str = "stop",
) -> Sampling:
    """``defaults`` (the model's) with the request's own values: temperature, top_p, top_k, seed, the first of
    ``max_tokens``' keys that is set, and ``stop``."""
    changes: dict[str, Any] = {}
    temperature = number(doc, "temperature", 0.0, 10.0)
    if temperature is not None:
        changes["temperature"] = temperature
    top_p = number(doc, "top_p", 0.0, 1.0)
    if top_p is not None:
        changes["top_p"] = top_p
    top_k = whole(doc, "top_k", 0)
    if top_k is not None:
        changes["top_k"] = top_k
    seed = whole(doc, "seed", -(1 << 63), (1 << 64) - 1)
    if seed is not None:
        changes["seed"] = seed % (1 << 32) if seed >= 0 else None
    for key in max_tokens:
        limit = whole(doc, key, -2 if key == "num_predict" else 1)
        if limit is not None:
            changes["max_tokens"] = limit if limit > 0 else None  # Ollama's -1 / -2: no limit
            break
    found = stops(doc.get(stop), stop)
    if found is not None:
        changes["stop"] = found
    return replace(defaults, **changes)


def refuse_unsupported(doc: Mapping[str, Any], *keys: str) -> None:
    """A 400 for a feature the server does not have (tools, structured output), rather than an answer that
    silently ignores it."""
    for key in keys:
        value = doc.get(key)
        if value not in (None, "", [], {}, False):
            raise UsageError(f"{key!r} is not supported by modelctl serve", hint=f"send the request without {key!r}")
