"""The typer application: global options, command registration, and the one error boundary."""

from __future__ import annotations

import sys

import typer

from modelctl import __version__
from modelctl.cli import errors

# The command modules are imported by _register() when the CLI runs, not when this module is imported.

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


def _register() -> None:
    from modelctl.cli import archive, auth, catalog, fit, models, publish, pull, run, serve, system, verify

    pull.register(app)
    run.register(app)
    serve.register(app)
    fit.register(app)
    models.register(app)
    publish.register(app)
    auth.register(app)
    archive.register(app)
    catalog.register(app)
    system.register(app)
    verify.register(app)


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
    _register()
    errors.handle_signals()
    args, debug = hoist_debug(sys.argv[1:])
    try:
        # not standalone: click's usage errors reach errors.report (one line, exit 2) instead of a boxed panel
        code = app(args=args, prog_name="modelctl", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        errors.finish(errors.report(exc, debug=debug))
    # typer.Exit(n) / ctx.exit(n) come back as a return value here
    errors.finish(code if isinstance(code, int) else 0)
