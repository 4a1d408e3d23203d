"""The README's CLI contract matches the real command line: every command, and exactly the options its --help offers.

The commands and options come from the click command tree typer builds (``modelctl.cli.app`` after ``_register()``),
not from help text. The contract is the first code block under "## CLI contract": a line that starts with
``modelctl`` begins an entry, an indented line continues it, `` ; `` separates two commands on one line, ``A | B``
names two commands that share their options, and ``#`` starts a comment that is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

README = Path(__file__).resolve().parents[2] / "README.md"
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]  # () is the root command
    text: str  # what follows the command path


def root() -> click.Group:
    from modelctl.cli import app

    app._register()
    command = typer.main.get_command(app.app)
    assert isinstance(command, click.Group)
    return command


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield prefix, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def option_names(command: click.Command) -> list[set[str]]:
    """Each option as the set of its spellings (``{"-q", "--quiet"}``), the help option left out."""
    ctx = click.Context(command)
    helps = set(ctx.help_option_names)
    return [
        set(p.opts) | set(p.secondary_opts)
        for p in command.params
        if isinstance(p, click.Option) and not set(p.opts) & helps
    ]


def contract_block() -> str:
    text = README.read_text()
    assert "## CLI contract" in text
    return text.split("## CLI contract", 1)[1].split("```", 2)[1]


def entries(group: click.Group) -> list[Entry]:
    lines: list[str] = []
    for raw in contract_block().splitlines()[1:]:  # the first line is the fence's info string
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line[0].isspace():
            assert lines, f"a continuation line before any command: {raw!r}"
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    found: list[Entry] = []
    for line in lines:
        for segment in line.split(" ; "):
            words = segment.split()
            assert words[0] == "modelctl", f"a contract entry that is not a modelctl command: {segment!r}"
            found.extend(parse(group, words[1:]))
    return found


def parse(group: click.Group, words: list[str]) -> list[Entry]:
    """``registry serve --root DIR`` -> [Entry(("registry", "serve"), "--root DIR")]; ``list | ls ...`` -> two."""
    path: tuple[str, ...] = ()
    current: click.Command = group
    i = 0
    while i < len(words) and isinstance(current, click.Group) and words[i] in current.commands:
        current = current.commands[words[i]]
        path = (*path, words[i])
        i += 1
    paths = [path]
    while i + 1 < len(words) and words[i] == "|":
        paths.append((*path[:-1], words[i + 1]))
        i += 2
    return [Entry(p, " ".join(words[i:])) for p in paths]


def test_the_contract_parses_into_commands_of_the_app() -> None:
    group = root()
    known = {path for path, _ in commands(group)}
    listed = entries(group)
    assert listed, "no contract entries found"
    assert {e.path for e in listed} - known == set()


def test_every_command_is_in_the_contract() -> None:
    group = root()
    listed = {e.path for e in entries(group)}
    leaves = {path for path, command in commands(group) if not isinstance(command, click.Group)}
    assert leaves - listed == set(), "commands missing from the README's CLI contract"
    assert () in listed, "the global options (modelctl [--debug] ...) are missing from the contract"


@pytest.mark.parametrize("path", sorted({p for p, _ in commands(root())}), ids=lambda p: " ".join(p) or "modelctl")
def test_contract_options_are_exactly_the_commands_options(path: tuple[str, ...]) -> None:
    group = root()
    command = dict(commands(group))[path]
    text = " ".join(e.text for e in entries(group) if e.path == path)
    written = set(OPTION.findall(text))
    offered = option_names(command)
    missing = sorted(min(names, key=len) for names in offered if not names & written)
    unknown = sorted(written - set().union(*offered))
    label = " ".join(("modelctl", *path))
    assert missing == [], f"{label}: --help offers options the contract leaves out"
    assert unknown == [], f"{label}: the contract lists options the command lacks"


@pytest.mark.parametrize(
    "path", sorted({p for p, c in commands(root()) if p and not isinstance(c, click.Group)}), ids=" ".join
)
def test_contract_names_each_positional_argument(path: tuple[str, ...]) -> None:
    group = root()
    command = dict(commands(group))[path]
    ctx = click.Context(command)
    text = " ".join(e.text for e in entries(group) if e.path == path)
    for param in command.params:
        if isinstance(param, click.Argument):
            metavar = param.make_metavar(ctx)
            assert metavar in text.split(), f"{' '.join(path)}: the contract does not show {metavar}"
