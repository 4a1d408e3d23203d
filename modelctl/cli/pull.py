"""``modelctl pull``: download models into the local store."""

from __future__ import annotations

from pathlib import Path

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.cli.progress import reporter
from modelctl.errors import UsageError

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).


def pull(
    refs: list[str] | None = typer.Argument(None, metavar="REF...", help="References, e.g. ai/smollm2:135M-Q4_K_M."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the manifest digests."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document describing the pulled models."),
    lock: Path | None = typer.Option(None, "--lock", help="Record each reference and its digest in this lockfile."),
    locked: Path | None = typer.Option(None, "--locked", help="Pull exactly the digests of this lockfile."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash the blobs already present; fetch damaged ones again."),
    output: Path | None = typer.Option(
        None,
        "--output",
        metavar="DIR",
        help="Also put the model's files in DIR, named as the artifact names them (hard links to the store where "
        "the file system allows, copies otherwise); a model already in the store is used without the network.",
    ),
) -> None:
    """Pull models: parallel, resumable, every byte verified."""
    from modelctl import reference
    from modelctl.services import lock as lockfile
    from modelctl.services import output as model_files
    from modelctl.services.pull import pull as pull_models

    if locked is not None:
        if refs:
            raise UsageError("--locked pulls what the lockfile names", hint="drop the REF arguments or --locked")
        parsed = lockfile.read(locked)
    elif not refs:
        raise UsageError("no model given", hint="modelctl pull REF... (or --locked FILE)")
    else:
        parsed = [reference.parse(r) for r in refs]
    if lock is not None:
        lockfile.check_target(lock)  # now, not after the download
    if output is not None:
        if len(parsed) != 1:
            raise UsageError(f"--output takes one model, not {len(parsed)}", hint="pull each model into its own DIR")
        model_files.check_directory(output)  # now, not after the download
    config = settings()
    out = reporter(quiet=quiet or json_out)
    try:
        results = pull_models(config, parsed, out, verify=verify, use_local=output is not None)
    finally:
        out.close()
    placed = model_files.place(config, results[0].reference, results[0].digest, output) if output else None
    if lock is not None:
        lockfile.write(lock, results)
    if json_out:
        docs = [r.to_json() for r in results]
        if placed is not None:
            docs[0]["output"] = placed.to_json()
        render.print_json({"models": docs})
    elif quiet:
        for r in results:
            print(r.digest)
    else:
        for r in results:
            print(f"{reference.parse(r.reference).short}: pulled {r.digest} ({render.size(r.size)})")
        if placed is not None:
            copies = len(placed.files) - placed.linked
            print(f"{len(placed.files)} files in {placed.directory} ({placed.linked} hard links, {copies} copies)")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
