"""The typer application: global options, command registration, and the one error boundary."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

from modelctl import __version__
from modelctl.cli import errors

# The command modules are imported by _register() when the CLI runs, not when this module is imported, and a run
# imports and builds only the module of the command it runs: typer turning all 26 commands and their options into
# click commands, and importing the 11 modules that define them, took ~15 ms of every command's start-up (issue 16).
# Anything else (the root's --help, a mistyped command that click suggests a name for) registers them all.
MODULES = ("pull", "run", "serve", "fit", "models", "publish", "auth", "archive", "catalog", "system", "verify")
"""The command modules (``modelctl.cli.<name>``, each with ``register(app)``), in the order the root --help lists
their commands."""
COMMANDS = {
    "pull": "pull",
    "run": "run",
    **dict.fromkeys(("serve", "ps", "stop"), "serve"),
    "fit": "fit",
    **dict.fromkeys(("list", "ls", "inspect", "rm", "tag", "path", "df", "prune"), "models"),
    **dict.fromkeys(("package", "push", "registry"), "publish"),
    **dict.fromkeys(("login", "logout"), "auth"),
    **dict.fromkeys(("save", "load"), "archive"),
    **dict.fromkeys(("card", "search"), "catalog"),
    "system": "system",
    "verify": "verify",
}
"""Each command (and command group) name, and the module that registers it (tests/unit/cli/test_cli_startup.py
checks this against what each module registers)."""
_registered: set[str] = set()

app = typer.Typer(
    name="modelctl",
    help="Pull, verify, fit-check and run open models from OCI registries.",
    no_args_is_help=True,
    add_completion=False,
    suggest_commands=False,  # click already says "Did you mean ...?"; typer's would say it a second time
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"modelctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and runtime logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """modelctl: Docker-style pulls of open models, verified, resumable, checked against your memory."""


def _register(command: str | None = None) -> None:
    """Register ``command``'s module, or every module when ``command`` is None or no known command.

    Idempotent: tests run several commands in one process."""
    wanted = [COMMANDS[command]] if command in COMMANDS else list(MODULES)
    if _registered.issuperset(wanted):
        return
    if len(wanted) > 1:  # all of them, in the listed order, whatever one command registered before
        app.registered_commands.clear()
        app.registered_groups.clear()
        _registered.clear()
    for name in wanted:
        importlib.import_module(f"modelctl.cli.{name}").register(app)
        _registered.add(name)


def command_of(args: Sequence[str]) -> str | None:
    """The command ``args`` run, or None where the root command handles them (``--help``, ``--version``, nothing).

    ``--debug`` is the root's only option before a command that is not eager (see :func:`hoist_debug`)."""
    for arg in args:
        if arg != "--debug":
            return None if arg.startswith("-") else arg
    return None


def hoist_debug(args: list[str]) -> tuple[list[str], bool]:
    """Move ``--debug`` in front of the command, so that ``modelctl pull --debug x`` means ``modelctl --debug pull x``.

    ``--debug`` is the root command's option, and click accepts a group's options only before the subcommand; users
    put it anywhere. Arguments after ``--`` are left alone (``modelctl run ai/x -- --debug`` asks about "--debug").
    """
    end = args.index("--") if "--" in args else len(args)
    found = "--debug" in args[:end]
    if not found:
        return args, False
    rest = [arg for arg in args[:end] if arg != "--debug"] + args[end:]
    return ["--debug", *rest], True


def run() -> None:
    errors.handle_signals()
    args, debug = hoist_debug(sys.argv[1:])
    _register(command_of(args))
    try:
        # not standalone: click's usage errors reach errors.report (one line, exit 2) instead of a boxed panel
        code = app(args=args, prog_name="modelctl", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        errors.finish(errors.report(exc, debug=debug))
    # typer.Exit(n) / ctx.exit(n) come back as a return value here
    errors.finish(code if isinstance(code, int) else 0)
