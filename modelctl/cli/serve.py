"""``modelctl serve`` (every model in the store behind OpenAI's, Ollama's and Anthropic's APIs), and ``ps`` and
``stop``, which ask a running server what it has loaded and unload a model."""

from __future__ import annotations

import sys
import time

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.cli.progress import reporter
from modelctl.cli.run import CACHE_TYPE, CTX_SIZE, FORCE, GPU_LAYERS, NO_PULL, THREADS, options_for

# The server's machinery (aiohttp, the pool) is imported inside the commands: `modelctl ps` loads none of it.

HOST_ENV = "MODELCTL_HOST"
KEY_ENV = "MODELCTL_API_KEY"
SERVER = typer.Option(
    "127.0.0.1:8080", "--host", envvar=HOST_ENV, metavar="HOST[:PORT]", help="The server to ask (MODELCTL_HOST)."
)
CLIENT_KEY = typer.Option(None, "--api-key", envvar=KEY_ENV, help="The server's API key (MODELCTL_API_KEY).")


def serve(
    ref: str | None = typer.Argument(
        None, metavar="[REF]", help="A model to load now (pulled if missing), or a GGUF file (./x.gguf)."
    ),
    host: str | None = typer.Option(None, "--host", help=f"Address to listen on (default: {HOST_ENV}, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (default: 8080)."),
    ctx_size: int | None = CTX_SIZE,
    gpu_layers: str = GPU_LAYERS,
    cache_type: str = CACHE_TYPE,
    threads: int | None = THREADS,
    no_pull: bool = NO_PULL,
    force: bool = FORCE,
    embeddings: bool = typer.Option(False, "--embeddings", help="Accepted for old scripts: embeddings always work."),
    keep_alive: str = typer.Option("5m", "--keep-alive", metavar="DURATION", help="Unload a model idle this long."),
    memory: str | None = typer.Option(None, "--memory", metavar="SIZE", help="RAM for models (default: free RAM)."),
    max_queue: int = typer.Option(16, "--max-queue", min=0, help="Requests that may wait per model (then 503)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar=KEY_ENV, help="Require this key on every request."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", metavar="ORIGIN", help="Allow web pages of ORIGIN."),
    allow_pull: bool = typer.Option(False, "--allow-pull", help="Let clients pull models (/api/pull)."),
    allow_delete: bool = typer.Option(False, "--allow-delete", help="Let clients delete models (/api/delete)."),
) -> None:
    """Serve every model in the store on OpenAI's, Ollama's and Anthropic's APIs, loading each on demand."""
    import os

    from modelctl.services.serve import scheduler
    from modelctl.services.serve.launch import serve as run_server
    from modelctl.services.serve.options import DEFAULT_HOST, DEFAULT_PORT, ServeOptions, parse_host, parse_size

    env_host, env_port = parse_host(os.environ[HOST_ENV]) if os.environ.get(HOST_ENV) else (DEFAULT_HOST, DEFAULT_PORT)
    try:
        idle = scheduler.keep_alive(keep_alive)
    except ValueError:
        hint = "use a duration such as 5m, 1h, 30s, 0 or -1 (never)"
        raise typer.BadParameter(hint, param_hint="--keep-alive") from None
    options = ServeOptions(
        host=host or env_host,
        port=env_port if port is None else port,
        model=ref,
        run=options_for(ctx_size, gpu_layers, cache_type, threads, no_pull, force),
        keep_alive=idle if idle is not None else 300.0,
        memory=parse_size(memory) if memory else None,
        max_queue=max_queue,
        api_key=api_key or None,
        cors_origins=tuple(cors_origin),
        allow_pull=allow_pull,
        allow_delete=allow_delete,
    )
    out = reporter(quiet=False)

    def ready(url: str) -> None:
        out.close()
        what = f"{ref} and every model in the store" if ref else "every model in the store"
        print(f"modelctl: serving {what} at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
        print(f"modelctl: OpenAI {url}/v1, Ollama {url}/api, Anthropic {url}/v1/messages, chat {url}/", file=sys.stderr)

    def event(what: str, model: str, detail: str) -> None:
        words = {"load": "loading", "unload": "unloaded", "crash": "lost", "failed": "failed to load"}
        suffix = f" ({detail})" if detail else ""
        print(f"modelctl: {words.get(what, what)} {model}{suffix}", file=sys.stderr, flush=True)

    def note(text: str) -> None:
        print(f"modelctl: note: {text}", file=sys.stderr)

    try:
        run_server(settings(), options, out, on_ready=ready, on_event=event, on_note=note)
    finally:
        out.close()


def ps(host: str = SERVER, api_key: str | None = CLIENT_KEY, json_out: bool = typer.Option(False, "--json")) -> None:
    """List the models a running server has loaded: memory by device, context, until when."""
    from modelctl.services.serve.client import loaded

    models = loaded(host, api_key=api_key)
    if json_out:
        render.print_json({"models": models})
        return
    rows = []
    for m in models:
        memory = ", ".join(f"{render.size(size)} {device}" for device, size in m["memory"].items() if size)
        rows.append((m["name"], memory or "-", str(m["context"]), _until(m)))
    render.print_table(("NAME", "MEMORY", "CONTEXT", "UNTIL"), rows)


def _until(model: dict[str, object]) -> str:
    if model.get("busy") or model.get("queued"):
        return "busy"
    expires = model.get("expires_at")
    if not isinstance(expires, int | float):
        return "forever"
    seconds = max(int(expires - time.time()), 0)
    if seconds >= 3600:
        return f"{seconds // 3600} hours from now"
    if seconds >= 60:
        return f"{seconds // 60} minutes from now"
    return f"{seconds} seconds from now"


def stop(
    model: str = typer.Argument(..., metavar="MODEL", help="A loaded model, as ps shows it."),
    host: str = SERVER,
    api_key: str | None = CLIENT_KEY,
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Unload a model from a running server now."""
    from modelctl.services.serve.client import stop as stop_model

    stopped = stop_model(host, model, api_key=api_key)
    if json_out:
        render.print_json({"stopped": stopped})
    else:
        for name in stopped:
            print(f"stopped {name}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("ps")(ps)
    app.command("stop")(stop)
