"""``modelctl pull``: download models into the local store."""

from __future__ import annotations

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.cli.progress import reporter


def pull(
    refs: list[str] = typer.Argument(..., metavar="REF...", help="Model references, e.g. ai/smollm2:135M-Q4_K_M."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the manifest digests."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document describing the pulled models."),
) -> None:
    """Pull models: parallel, resumable, every byte verified."""
    from modelctl import reference
    from modelctl.services.pull import pull as pull_models

    parsed = [reference.parse(r) for r in refs]
    out = reporter(quiet=quiet or json_out)
    try:
        results = pull_models(settings(), parsed, out)
    finally:
        out.close()
    if json_out:
        render.print_json({"models": [r.to_json() for r in results]})
    elif quiet:
        for r in results:
            print(r.digest)
    else:
        for r in results:
            print(f"{reference.parse(r.reference).short}: pulled {r.digest} ({render.size(r.size)})")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
