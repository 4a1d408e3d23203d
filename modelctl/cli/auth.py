"""``modelctl login`` / ``logout``: credentials in $DOCKER_CONFIG/config.json, shared with Docker."""

from __future__ import annotations

import sys

import typer

from modelctl.cli.context import settings
from modelctl.errors import UsageError

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).


def login(
    registry: str = typer.Argument(..., metavar="REGISTRY"),
    username: str | None = typer.Option(None, "--username", "-u"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Log in to a registry (the password is checked before it is stored)."""
    from modelctl.services.login import login as do_login

    if username is None:
        if not sys.stdin.isatty():
            raise UsageError("no username given", hint="pass -u USER")
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True)
    else:
        raise UsageError("no password given", hint="pipe it in with --password-stdin")
    if not password:
        raise UsageError("empty password", hint="pipe the password in with --password-stdin")
    path = do_login(settings(), registry, username, password)
    print(f"Login succeeded (credentials stored in {path})", file=sys.stderr)


def logout(registry: str = typer.Argument(..., metavar="REGISTRY")) -> None:
    """Forget the stored credentials of a registry."""
    from modelctl.services.login import logout as do_logout

    if do_logout(settings(), registry):
        print(f"Removed credentials for {registry}", file=sys.stderr)
    else:
        print(f"Not logged in to {registry}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
