"""``modelctl verify``: re-hash the local store, report damaged blobs and the models using them, repair them."""

from __future__ import annotations

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.cli.progress import reporter

# The service is imported inside the command: every command module is imported at start-up to register its
# commands, and `modelctl list` should not load the verify's (and the pull's) machinery.


def verify(
    refs: list[str] | None = typer.Argument(None, metavar="REF...", help="Models to check (default: every blob)."),
    repair: bool = typer.Option(
        False, "--repair", help="Fetch damaged blobs again from each model's source (remove them when offline)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document describing what was found."),
) -> None:
    """Re-hash stored blobs; exit 5 when any is damaged (missing, truncated or changed)."""
    from modelctl import reference
    from modelctl.services.verify import verify as verify_store

    out = reporter(quiet=json_out)
    try:
        report = verify_store(settings(), refs or [], out, repair=repair)
    finally:
        out.close()
    error = report.error()
    if json_out:
        render.print_json(report.to_json())
    else:
        for damaged in report.damaged:
            users = ", ".join(reference.parse(m).short for m in damaged.models) or "no model (unused)"
            print(f"damaged {damaged.finding.digest}: {damaged.finding.describe()}; used by {users}")
        for digest in report.removed:
            print(f"removed damaged blob {digest}")
        for name in report.restored:
            print(f"restored {reference.parse(name).short}")
        for gone in report.incomplete:
            short = reference.parse(gone.reference).short
            print(f"incomplete {short} (its damaged blobs are removed; it stays listed): {gone.error}")
            print(f"  to get {short} back, {gone.fix()}")
        state = "ok" if not report.damaged else f"{len(report.damaged)} damaged"
        print(f"checked {report.blobs} blobs ({render.size(report.bytes)}): {state}")
    if error is not None:
        raise error


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
