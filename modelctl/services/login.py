"""login / logout: check credentials against the registry, then keep them where Docker keeps them."""

from __future__ import annotations

from pathlib import Path

from modelctl import reference
from modelctl.config import Config
from modelctl.errors import AuthError
from modelctl.oci import credentials
from modelctl.oci.client import RegistryClient


def login(config: Config, registry: str, username: str, password: str) -> Path:
    """Ping the registry with the new credentials first, so a typo is reported now and never stored."""

    trial = credentials.Credentials(username=username, password=password)
    canonical = reference.registry_host(credentials.canonical_registry(registry))
    with RegistryClient(config, credentials=lambda host: trial) as client:
        try:
            client.ping(canonical)
        except AuthError as exc:  # its hint says to log in: this is the login
            hint = f"check the user name ({username}) and the password or access token; nothing was stored"
            raise AuthError(exc.message, hint=hint) from None
    return credentials.store_credentials(config, canonical, username, password)


def logout(config: Config, registry: str) -> bool:

    return credentials.erase_credentials(config, credentials.canonical_registry(registry))
