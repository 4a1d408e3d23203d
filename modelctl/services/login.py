"""login / logout: check credentials against the registry, then keep them where Docker keeps them."""

from __future__ import annotations

from pathlib import Path

from modelctl.config import Config
from modelctl.oci import credentials
from modelctl.oci.client import RegistryClient


def login(config: Config, registry: str, username: str, password: str) -> Path:
    """Ping the registry with the new credentials first, so a typo is reported now and never stored."""

    trial = credentials.Credentials(username=username, password=password)
    canonical = credentials.canonical_registry(registry)
    with RegistryClient(config, credentials=lambda host: trial) as client:
        client.ping(canonical)
    return credentials.store_credentials(config, canonical, username, password)


def logout(config: Config, registry: str) -> bool:

    return credentials.erase_credentials(config, credentials.canonical_registry(registry))
