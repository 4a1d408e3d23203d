"""``modelctl fit``: will this model fit this machine (or the GPUs named with ``--gpu``), with the settings ``run``
would use or llama.cpp's own knobs?"""

from __future__ import annotations

import sys
from typing import Any

import typer

from modelctl.cli import render
from modelctl.cli.context import settings

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).

CACHE_HELP = "f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0 or q5_1"


def fit(
    ref: str = typer.Argument(
        ..., metavar="SOURCE", help="A model reference, or a GGUF file: ./x.gguf, /path/x.gguf, file://..."
    ),
    ctx_size: int | None = typer.Option(None, "--ctx-size", min=16, help="Context window (default: what run uses)."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Logical batch (llama.cpp's -b)."),
    ubatch_size: int = typer.Option(512, "--ubatch-size", min=1, help="Physical batch (llama.cpp's -ub)."),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Parallel sequences (llama.cpp's -np)."),
    flash_attn: str | None = typer.Option(
        None, "--flash-attn", metavar="on|off|auto", help="Flash attention (default: what run does)."
    ),
    cache_type: str = typer.Option("f16", "--cache-type", help=f"KV cache type for K and V: {CACHE_HELP}."),
    cache_type_k: str | None = typer.Option(None, "--cache-type-k", help="K cache type (overrides --cache-type)."),
    cache_type_v: str | None = typer.Option(None, "--cache-type-v", help="V cache type (overrides --cache-type)."),
    gpu_layers: str = typer.Option("auto", "--gpu-layers", metavar="N|auto"),
    n_cpu_moe: int = typer.Option(0, "--n-cpu-moe", min=0, help="Keep the experts of the first N layers on the CPU."),
    split_mode: str = typer.Option("layer", "--split-mode", metavar="layer|row|none", help="How to use several GPUs."),
    tensor_split: str | None = typer.Option(
        None, "--tensor-split", metavar="N,N,...", help="Each GPU's share of the layers, e.g. 3,1."
    ),
    gpu: list[str] = typer.Option(
        [], "--gpu", metavar="SIZE", help="Plan for a GPU of this size (repeat for several): 24GiB, 24576MiB."
    ),
    gpu_backend: str = typer.Option(
        "cuda", "--gpu-backend", metavar="cuda|rocm|vulkan|metal", help="The backend of the --gpu devices."
    ),
    ram: str | None = typer.Option(
        None, "--ram", metavar="SIZE", help="Plan for this much RAM (default: this machine's)."
    ),
    remote: bool = typer.Option(False, "--remote", help="Read the GGUF header from the registry (no download)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check memory fit before downloading or loading (exit 0 whatever the verdict)."""
    from modelctl.errors import UsageError
    from modelctl.fit import devices
    from modelctl.fit.settings import RunSettings
    from modelctl.services.fit import fit_reference

    layers: int | None = None
    if gpu_layers != "auto":
        if not gpu_layers.lstrip("-").isdigit():
            raise UsageError(f"bad --gpu-layers {gpu_layers!r}", hint="a number of layers, or auto")
        layers = int(gpu_layers)
    config = settings()
    try:
        split = tuple(float(x) for x in tensor_split.split(",")) if tensor_split else ()
        run_settings = RunSettings(
            n_ctx=ctx_size,
            n_batch=batch_size,
            n_ubatch=ubatch_size,
            n_seq=parallel,
            flash_attn=flash_attn,
            cache_type=cache_type,
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            gpu_layers=layers,
            n_cpu_moe=n_cpu_moe,
            split_mode=split_mode,
            tensor_split=split,
            cpu_buffers=config.cpu_buffers,
        )
        machine = None
        if gpu or ram is not None:
            ram_bytes = devices.parse_size(ram) if ram is not None else None
            host = devices.host() if ram_bytes is None else devices.ram(ram_bytes)
            machine = devices.planned([devices.parse_size(size) for size in gpu], gpu_backend, host)
    except ValueError as exc:
        raise UsageError(str(exc), hint="see modelctl fit --help") from None
    report = fit_reference(config, ref, run_settings, remote=remote, devices=machine)
    doc = report.to_json()
    if doc.get("notice"):
        print(f"modelctl: note: {doc['notice']}", file=sys.stderr)
    if json_out:
        render.print_json(doc)
        return
    _table(doc)


def _table(doc: dict[str, Any]) -> None:
    s, m = doc["settings"], doc["memory"]
    print(f"{doc.get('reference') or ''}")
    print(
        f"settings: ctx {s['ctx_size']}, cache {s['cache_type_k']}/{s['cache_type_v']}, "
        f"flash attention {s['flash_attn']}, batch {s['n_batch']}/{s['n_ubatch']}, gpu layers {s['gpu_layers']}"
    )
    render.print_table(
        ("MEMORY", "SIZE"),
        [(k, render.size(int(m[k]))) for k in ("weights", "kv_cache", "output", "compute", "total")],
    )
    render.print_table(
        ("DEVICE", "KIND", "TOTAL", "FREE", "NEEDS", "WEIGHTS", "KV", "COMPUTE", "OVERHEAD"),
        [
            (
                d["name"],
                d["kind"],
                render.size(int(d["total"])),
                render.size(int(d["free"])),
                render.size(int(d["need"])),
                render.size(int(d["buffers"]["weights"])),
                render.size(int(d["buffers"]["kv_cache"])),
                render.size(int(d["buffers"]["compute"])),
                render.size(int(d["buffers"]["overhead"])),
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
