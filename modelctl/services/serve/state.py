"""What every handler reaches through its request: the settings, the catalog, the pool, the budget."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from aiohttp import web

from modelctl.config import Config
from modelctl.services.serve.budget import Budget
from modelctl.services.serve.catalog import Catalog
from modelctl.services.serve.options import ServeOptions
from modelctl.services.serve.pool import Pool


@dataclass(frozen=True, kw_only=True, slots=True)
class Server:
    config: Config
    options: ServeOptions
    catalog: Catalog
    pool: Pool
    budget: Budget
    executor: Executor
    started: float
    """When it started (Unix time), for the ``created`` fields that need one."""


SERVER = web.AppKey("server", Server)


def server(request: web.Request) -> Server:
    return request.app[SERVER]
