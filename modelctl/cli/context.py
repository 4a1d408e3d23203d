"""What a command reads about its run: the settings, resolved once from the environment, and the global --debug."""

from __future__ import annotations

import click

from modelctl import config as _config
from modelctl.config import Config


def settings() -> Config:
    return _config.from_env()


def debug() -> bool:
    """Whether this run has ``--debug`` (the root command's option, in any position: see ``app.run``)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.find_root().params.get("debug"))
