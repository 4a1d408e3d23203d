"""``modelctl fit``: will this model fit this machine, with the settings ``run`` would use?"""

from __future__ import annotations

from typing import Any

import typer

from modelctl.cli import render
from modelctl.cli.context import settings

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).


def fit(
    ref: str = typer.Argument(..., metavar="SOURCE", help="A model reference, or a GGUF file: ./x.gguf, file://..."),
    ctx_size: int | None = typer.Option(None, "--ctx-size", min=16, help="Context window (default: what run uses)."),
    cache_type: str = typer.Option("f16", "--cache-type", help="KV cache type: f16, q8_0 or q4_0."),
    gpu_layers: str = typer.Option("auto", "--gpu-layers", metavar="N|auto"),
    remote: bool = typer.Option(False, "--remote", help="Read the GGUF header from the registry (no download)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check memory fit before downloading or loading (exit 0 whatever the verdict)."""
    import dataclasses

    from modelctl.errors import UsageError
    from modelctl.fit.settings import RunSettings
    from modelctl.services.fit import fit_reference

    if cache_type not in ("f16", "q8_0", "q4_0"):
        raise UsageError(f"unknown cache type {cache_type!r}", hint="use f16, q8_0 or q4_0")
    layers: int | None = None
    if gpu_layers != "auto":
        if not gpu_layers.lstrip("-").isdigit():
            raise UsageError(f"bad --gpu-layers {gpu_layers!r}", hint="a number of layers, or auto")
        layers = int(gpu_layers)
    config = settings()
    run_settings = dataclasses.replace(
        RunSettings(), n_ctx=ctx_size, cache_type=cache_type, gpu_layers=layers, cpu_buffers=config.cpu_buffers
    )
    report = fit_reference(config, ref, run_settings, remote=remote)
    doc = report.to_json()
    if json_out:
        render.print_json(doc)
        return
    _table(doc)


def _table(doc: dict[str, Any]) -> None:
    s, m = doc["settings"], doc["memory"]
    print(f"{doc.get('reference') or ''}")
    print(
        f"settings: ctx {s['ctx_size']}, cache {s['cache_type']}, batch {s['n_batch']}/{s['n_ubatch']}, "
        f"gpu layers {s['gpu_layers']}"
    )
    render.print_table(
        ("MEMORY", "SIZE"),
        [(k, render.size(int(m[k]))) for k in ("weights", "kv_cache", "output", "compute", "total")],
    )
    render.print_table(
        ("DEVICE", "KIND", "TOTAL", "FREE", "NEEDS"),
        [
            (
                d["name"],
                d["kind"],
                render.size(int(d["total"])),
                render.size(int(d["free"])),
                render.size(int(d["need"])),
            )
            for d in doc["devices"]
        ],
    )
    print(
        f"verdict: {doc['verdict']} (gpu layers {doc['gpu_layers']}, largest context that fits {doc['max_ctx_size']})"
    )
    if doc.get("suggestion"):
        print(f"suggestion: {doc['suggestion']}")
    if doc.get("bytes_fetched"):
        print(f"read {render.size(int(doc['bytes_fetched']))} of GGUF header from the registry")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
