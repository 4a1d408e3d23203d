"""save / load: models to and from an OCI image layout tar, for machines without a registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.errors import UsageError

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).


def save(
    refs: list[str] = typer.Argument(..., metavar="REF..."),
    output: str = typer.Option("-", "--output", "-o", metavar="FILE", help="The tar to write ('-': stdout)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was saved as JSON."),
) -> None:
    """Write local models (and their model cards) to an OCI layout tar: modelctl load -i FILE on another machine."""
    from modelctl.services import archive

    if output == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal", hint="use -o FILE or redirect stdout")
        sys.stdout.flush()
        result = archive.save(settings(), refs, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        where = sys.stderr  # stdout carries the tar
    else:
        result = archive.save_to_path(settings(), refs, Path(output))
        where = sys.stdout
    if json_out:
        where.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    for model in result.models:
        print(f"saved {model.reference} ({model.model_id})", file=where)
    cards = f", {result.referrers} attached" if result.referrers else ""
    print(f"{result.blobs} blobs, {render.size(result.bytes)}{cards}", file=where)


def load(
    input_: str = typer.Option("-", "--input", "-i", metavar="FILE", help="The tar to read ('-': stdin)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was loaded as JSON."),
    name: str | None = typer.Option(
        None,
        "--name",
        metavar="REF",
        help="Load as REPOSITORY (each model keeps its tag; needed for skopeo's tag-only archives) or as REPO:TAG.",
    ),
) -> None:
    """Import models from an OCI layout tar (modelctl save, skopeo oci-archive), verifying every digest."""
    from modelctl.services import archive

    if input_ == "-":
        if sys.stdin.isatty():
            raise UsageError("no archive on stdin", hint="use -i FILE or pipe one in: modelctl load < models.tar")
        result = archive.load(settings(), sys.stdin.buffer, name="stdin", as_name=name)
    else:
        result = archive.load_from_path(settings(), Path(input_), as_name=name)
    if json_out:
        render.print_json(result.to_json())
        return
    for model in result.models:
        print(f"loaded {model.reference} ({model.model_id})")
    cards = f", {result.referrers} attached" if result.referrers else ""
    print(f"{result.blobs} blobs ({result.new_blobs} new), {render.size(result.bytes)}{cards}")


def register(app: typer.Typer) -> None:
    app.command("save")(save)
    app.command("load")(load)
