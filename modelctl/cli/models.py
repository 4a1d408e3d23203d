"""Local model commands: list/ls, inspect, rm, tag, path, df, prune."""

from __future__ import annotations

import typer

from modelctl.cli import render
from modelctl.cli.context import settings

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).

_HEADERS = ("MODEL", "PARAMETERS", "QUANTIZATION", "ARCHITECTURE", "MODEL ID", "CREATED", "SIZE")


def list_(
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only model IDs."),
) -> None:
    """List the models in the local store."""
    from modelctl.services.models import DAMAGED, list_models

    rows = list_models(settings())
    if json_out:
        render.print_json([r.to_json() for r in rows])
    elif quiet:
        for r in rows:
            print(r.model_id)
    else:
        render.print_table(
            _HEADERS,
            [
                (
                    r.short,
                    r.parameters or "-",
                    r.quantization or "-",
                    r.architecture or "-",
                    r.model_id,
                    render.age(r.created),
                    "damaged: modelctl verify --repair" if r.format == DAMAGED else render.size(r.size),
                )
                for r in rows
            ],
        )


def inspect(
    ref: str = typer.Argument(..., metavar="REF"),
    remote: bool = typer.Option(False, "--remote", help="Ask the registry (manifest and config only, no weights)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (the default output is JSON too)."),
) -> None:
    """Show a model's manifest, config and summary."""
    if remote:
        from modelctl.services.models import inspect_remote

        render.print_json(inspect_remote(settings(), ref))
    else:
        from modelctl.services.models import inspect_local

        render.print_json(inspect_local(settings(), ref))


def rm(
    refs: list[str] = typer.Argument(..., metavar="REF..."),
    force: bool = typer.Option(False, "--force", "-f", help="Ignore absent models; remove every tag an ID matches."),
) -> None:
    """Remove models (blobs shared with other tags stay)."""
    from modelctl.services.models import remove

    for name in remove(settings(), refs, force=force):
        print(f"removed {name}")


def tag(source: str = typer.Argument(..., metavar="SRC"), target: str = typer.Argument(..., metavar="DST")) -> None:
    """Give a local model another name."""
    from modelctl.services.models import tag as tag_model

    print(tag_model(settings(), source, target))


def path(ref: str = typer.Argument(..., metavar="REF")) -> None:
    """Print the local GGUF path: llama-server -m "$(modelctl path ai/x)"."""
    from modelctl.services.models import model_path

    print(model_path(settings(), ref))


def df(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show disk usage of the store."""
    from modelctl.services.models import disk_usage

    usage = disk_usage(settings())
    if json_out:
        render.print_json(usage.to_json())
        return
    render.print_table(
        ("WHAT", "SIZE"),
        [
            (f"models ({usage.models})", render.size(usage.store_bytes - usage.unreferenced_bytes)),
            (f"blobs ({usage.blobs})", render.size(usage.store_bytes)),
            ("unreferenced (modelctl prune)", render.size(usage.unreferenced_bytes)),
            ("partial downloads (modelctl prune --partials)", render.size(usage.partial_bytes)),
            ("free on disk", render.size(usage.free_bytes)),
        ],
    )


def prune(
    partials: bool = typer.Option(
        False, "--partials", help="Also delete partial downloads no running pull is using (they can no longer resume)."
    ),
) -> None:
    """Delete blobs no model references (older than an hour, so running pulls are safe)."""
    from modelctl.services.models import prune as prune_store
    from modelctl.services.models import prune_partials

    removed = prune_store(settings())
    print(f"removed {len(removed)} blobs")
    if partials:
        gone = prune_partials(settings())
        busy = f"; {gone.in_use} in use by a running pull, kept" if gone.in_use else ""
        print(f"removed {gone.count} partial downloads ({render.size(gone.bytes)}){busy}")


def register(app: typer.Typer) -> None:
    app.command("list")(list_)
    app.command("ls", hidden=True)(list_)
    app.command("inspect")(inspect)
    app.command("rm")(rm)
    app.command("tag")(tag)
    app.command("path")(path)
    app.command("df")(df)
    app.command("prune")(prune)
