"""An OpenAI-compatible HTTP API for one model, built on llama-cpp-python's own server extra and uvicorn.

It runs in the runtime's worker process (:func:`modelctl.runtime.process.serve`), never in the command itself.
``/v1/models``, ``/v1/chat/completions`` (streamed or not), ``/v1/completions`` and ``/v1/embeddings`` come from
``llama_cpp.server``; modelctl supplies the settings (the GGUF path, the fit plan's context and GPU layers) and
the chat template, exactly as ``modelctl run`` would load the model.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelctl.errors import ModelctlError, UsageError
from modelctl.runtime.engine import LoadSpec, weight_buffers, wrap


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeSpec:
    load: LoadSpec
    model_name: str
    """The id ``/v1/models`` lists and requests may name (the model's short reference)."""
    host: str = "127.0.0.1"
    port: int = 8080
    embeddings: bool = False
    """Load with embeddings enabled so ``/v1/embeddings`` answers (slower prompts for generative models)."""
    mean_pooling_key: str | None = None
    """For a generative model without a pooling type (``<arch>.pooling_type``): pool embeddings by their mean,
    so ``/v1/embeddings`` returns one vector per input as OpenAI clients expect, not one per token."""


def check_address(host: str, port: int) -> None:
    """Fail early, with a clear message, when the address cannot be bound (before the model loads)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve --host {host}: {exc.strerror}", hint="use an IP address") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --port") from None


def create_app(spec: ServeSpec) -> Any:
    """The ASGI app with the model loaded (blocking until it is)."""
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    load = spec.load
    overrides = [f"{spec.mean_pooling_key}=int:1"] if spec.embeddings and spec.mean_pooling_key else None
    model = ModelSettings(
        model=str(load.model_path),
        model_alias=spec.model_name,
        logits_all=False,  # the server's default keeps n_ctx x n_vocab floats of logits in RAM
        embedding=spec.embeddings,
        kv_overrides=overrides,
        chat_format=None,
        cache=False,
        **load.llama_kwargs(),
    )
    server = ServerSettings(host=spec.host, port=spec.port)
    try:
        with weight_buffers(load):
            app = server_app.create_app(server_settings=server, model_settings=[model])
    except (ValueError, RuntimeError) as exc:
        raise ModelctlError(
            f"llama.cpp could not load {load.model_path.name}: {exc}",
            hint="re-run with --debug to see llama.cpp's log",
        ) from None
    proxy = server_app._llama_proxy
    if proxy is not None:
        wrap(proxy(spec.model_name), load)  # installs the chosen chat template on the loaded model
    return app


def serve(spec: ServeSpec, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). ``on_ready`` gets the base URL once the model is loaded."""
    import uvicorn

    check_address(spec.host, spec.port)
    app = create_app(spec)
    config = uvicorn.Config(
        app,
        host=spec.host,
        port=spec.port,
        log_level="info" if spec.load.verbose else "warning",
        access_log=spec.load.verbose,
    )
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    if on_ready is not None:
        on_ready(f"http://{host}:{spec.port}/v1")
    uvicorn.Server(config).run()
