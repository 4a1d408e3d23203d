"""Asking a running server what it has loaded, or to unload a model: what ``modelctl ps`` and ``stop`` do."""

from __future__ import annotations

from typing import Any

import httpx

from modelctl.errors import AuthError, IntegrityError, ModelctlError, NotFound, RegistryError, UsageError
from modelctl.oci import safejson
from modelctl.services.serve.address import parse_host, url

TIMEOUT = 30.0
MAX_ANSWER = 16 << 20
"""Bytes of a server's answer parsed (ps lists a few models); a deeper or larger one is read as no answer."""


def base_url(host: str) -> str:
    """``http://HOST:PORT`` from ``HOST[:PORT]`` or a URL (MODELCTL_HOST's forms)."""
    return url(*parse_host(host))


def loaded(host: str, *, api_key: str | None = None) -> list[dict[str, Any]]:
    """The models the server at ``host`` has loaded (``/modelctl/ps``)."""
    models: list[dict[str, Any]] = _call("GET", host, "/modelctl/ps", api_key=api_key)["models"]
    return models


def stop(host: str, model: str, *, api_key: str | None = None) -> list[str]:
    """Unload ``model`` now; NotFound (exit 3) when it is not loaded."""
    stopped: list[str] = _call("POST", host, "/modelctl/stop", api_key=api_key, json={"model": model})["stopped"]
    return stopped


def _call(method: str, host: str, path: str, *, api_key: str | None, json: Any = None) -> dict[str, Any]:
    base = base_url(host)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT, trust_env=False) as client:
            response = client.request(method, path, headers=headers, json=json)
    except httpx.TransportError as exc:
        raise RegistryError(
            f"no modelctl server answers at {base} ({type(exc).__name__})",
            hint="start one with modelctl serve, or point MODELCTL_HOST (or --host) at it",
        ) from None
    try:
        doc: Any = safejson.loads(response.content, what=f"answer of {base}", max_size=MAX_ANSWER)
    except IntegrityError:
        doc = {}
    message = _message(doc) or f"HTTP {response.status_code}"
    if response.status_code == 401:
        hint = "give the server's key: --api-key or MODELCTL_API_KEY"
        raise AuthError(f"{base} refused the request: {message}", hint=hint)
    if response.status_code == 404:
        if isinstance(doc, dict) and "error" in doc:
            raise NotFound(message)
        raise RegistryError(f"{base} is not a modelctl server (no {path})", hint="check MODELCTL_HOST or --host")
    if response.status_code == 400:
        raise UsageError(message)
    if response.status_code >= 300 or not isinstance(doc, dict):
        raise ModelctlError(f"{base} answered {response.status_code}: {message}")
    return doc


def _message(doc: Any) -> str | None:
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict):
            return str(error.get("message"))
        if isinstance(error, str):
            return error
    return None
