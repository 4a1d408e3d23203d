"""Settings for a command, resolved once per process from the environment."""

from __future__ import annotations

from modelctl import config as _config
from modelctl.config import Config


def settings() -> Config:
    return _config.from_env()
