"""``modelctl card`` and ``modelctl search``: model cards and the catalog of bundled cards."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from modelctl.cli import render
from modelctl.cli.context import settings

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).

if TYPE_CHECKING:
    from modelctl.cards import Card

_FITS = {"fits": "yes", "partial": "partial (some layers on the CPU)", "does_not_fit": "no"}


def card(
    ref: str = typer.Argument(..., metavar="REF"),
    json_out: bool = typer.Option(False, "--json", help="Print the card's front matter as JSON."),
    raw: bool = typer.Option(False, "--raw", help="Print the card's Markdown as it is."),
    remote: bool = typer.Option(False, "--remote", help="Ask the registry even when the model is in the local store."),
    offline: bool = typer.Option(False, "--offline", help="Never ask the registry: local store and bundled cards."),
) -> None:
    """Show a model's card: attached to the model (local store, then registry), else the one bundled with modelctl."""
    from modelctl.errors import UsageError
    from modelctl.services.catalog import find_card

    if json_out and raw:
        raise UsageError("--json and --raw exclude each other", hint="choose one")
    if remote and offline:
        raise UsageError("--remote and --offline exclude each other", hint="choose one")
    found = find_card(settings(), ref, remote=remote, offline=offline)
    if raw:
        sys.stdout.write(found.text if found.text.endswith("\n") else found.text + "\n")
        return
    if found.card is None:
        assert found.error is not None
        if json_out:
            raise found.error
        print(f"modelctl: warning: {found.error}", file=sys.stderr)
        _markdown(found.text)
        return
    if json_out:
        doc = found.card.to_json()
        doc["card_source"] = {"kind": found.source, "where": found.where}
        render.print_json(doc)
        return
    print(f"(card: {found.source}, {found.where})", file=sys.stderr)
    _markdown(_document(found.card))


def _markdown(text: str) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(text))


def _document(c: Card) -> str:
    """The card as one Markdown document: a summary of the front matter, then the card's own text."""
    lines = [f"# {c.title} ({c.repository})", ""]
    facts = [
        ("Provider", c.provider),
        ("Architecture", c.architecture),
        ("License", f"[{c.license.name}]({c.license.url})"),
        ("Languages", ", ".join(c.languages)),
        ("Knowledge cutoff", c.cutoff or "not stated"),
        ("Tool calling", "yes" if c.capabilities.tool_calling else "no"),
        ("Input", ", ".join(c.capabilities.modalities)),
    ]
    lines += [f"- **{k}**: {v}" for k, v in facts]
    lines += [
        "",
        "## Variants",
        "",
        "| Tag | Parameters | Quantization | Context | Size | VRAM |",
        "|---|---|---|---|---|---|",
    ]
    for v in c.variants:
        tag = f"{v.tag} (latest)" if v.latest else v.tag
        size = render.size(v.size) if v.size else "-"
        vram = render.size(v.vram) if v.vram else "-"
        lines.append(f"| {tag} | {v.parameters} | {v.quantization} | {v.context_window} | {size} | {vram} |")
    lines += ["", "VRAM: every layer on the GPU at `modelctl run`'s default context, computed by modelctl's estimator."]
    if c.benchmarks:
        lines += ["", "## Benchmarks", "", "| Benchmark | Size | Score | Note |", "|---|---|---|---|"]
        lines += [f"| {b.name} | {b.parameters} | {b.score:g} | {b.note or ''} |" for b in c.benchmarks]
    if c.intended_uses:
        lines += ["", "## Intended uses", ""] + [f"- {u}" for u in c.intended_uses]
    if c.sources:
        lines += ["", "## Sources", ""] + [f"- <{s}>" for s in c.sources]
    if c.body:
        lines += ["", "---", "", c.body]
    return "\n".join(lines) + "\n"


def search(
    term: str | None = typer.Argument(None, metavar="[TERM]", help="Match repository, title, provider or tag."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List the models modelctl has cards for, with sizes, VRAM and whether each variant fits this machine."""
    from modelctl.services.catalog import search as search_cards

    rows = search_cards(term, cpu_buffers=settings().cpu_buffers)
    if json_out:
        render.print_json([r.to_json() for r in rows])
        return
    if not rows:
        print(f"no bundled model card matches {term!r}" if term else "no bundled model cards", file=sys.stderr)
        return
    render.print_table(
        ("MODEL", "PARAMETERS", "QUANTIZATION", "CONTEXT", "SIZE", "VRAM", "FITS HERE"),
        [
            (
                f"{r.repository}:{r.tag}" + (" (latest)" if r.latest else ""),
                r.parameters,
                r.quantization,
                str(r.context_window),
                render.size(r.size),
                render.size(r.vram),
                _FITS.get(r.fits, r.fits),
            )
            for r in rows
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("card")(card)
    app.command("search")(search)
