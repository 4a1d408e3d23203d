"""``modelctl system``: the runtime, its backends, the devices and the store, as this install sees them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from modelctl.cli import render
from modelctl.cli.context import settings

if TYPE_CHECKING:
    from modelctl.services.system import SystemReport


def system(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the runtime and its backends, the GPUs and RAM, the CPU and the store."""
    from modelctl.services.system import system as gather  # here: every command imports this module at start-up

    report = gather(settings())
    if json_out:
        render.print_json(report.to_json())
        return
    _plain(report)


def _plain(report: SystemReport) -> None:
    runtime, store = report.runtime, report.store
    backends = ", ".join(f"{b.name} ({', '.join(b.devices)})" if b.devices else b.name for b in runtime.backends)
    offload = "yes" if runtime.gpu_offload else "no (CPU-only build)"
    rows = [
        ("modelctl", report.version),
        ("llama-cpp-python", runtime.version or "not installed"),
        ("llama.cpp", runtime.system_info or "-"),
        ("backends", backends or "-"),
        ("gpu offload", offload),
        ("cpu", f"{report.cpu_model} ({report.cpu_count} threads{', AMX' if report.cpu_has_amx else ''})"),
        ("cpu buffers", f"{report.buffers.choice} (MODELCTL_CPU_BUFFERS={report.buffers.setting})"),
        (
            "store",
            f"{store.home}: {store.models} model{'' if store.models == 1 else 's'}, {render.size(store.store_bytes)}, "
            f"{render.size(store.free_bytes)} free on disk",
        ),
    ]
    if runtime.error:
        rows.insert(3, ("runtime error", runtime.error))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}   {value}")
    print()
    render.print_table(
        ("DEVICE", "KIND", "TOTAL", "FREE"),
        [(d.name, d.kind, render.size(d.total), render.size(d.free)) for d in report.devices],
    )
    if report.notice:
        print()
        print(f"note: {report.notice}")


def register(app: typer.Typer) -> None:
    app.command("system")(system)
