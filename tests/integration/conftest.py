"""Real servers for integration tests: Debian's docker-registry (anonymous, htpasswd, token auth), the token
service, and a fault proxy; each function-scoped (a registry starts in ~0.1 s) and always reaped."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import servers
from helpers.faults import FaultProxy
from helpers.ggufs import tiny_llama
from helpers.oci_layout import OCILayout
from helpers.servers import RegistryServer
from helpers.token_server import Signer, TokenServer

HTPASSWD_USER = "alice"
TOKEN_USER = "bob"


@pytest.fixture()
def docker_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An anonymous docker-registry: anyone pulls and pushes."""
    with servers.docker_registry(tmp_path / "registry") as server:
        yield server


@pytest.fixture()
def docker_registry_htpasswd(tmp_path: Path) -> Iterator[RegistryServer]:
    """docker-registry with Basic auth; ``username``/``password`` are the one valid account."""
    account = (HTPASSWD_USER, secrets.token_hex(8))
    with servers.docker_registry(tmp_path / "registry-htpasswd", htpasswd=account) as server:
        yield server


@pytest.fixture(scope="session")
def token_signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """One RSA key and self-signed certificate per session (the registries' ``rootcertbundle``)."""
    return Signer.generate(tmp_path_factory.mktemp("token-signer"))


@pytest.fixture()
def token_server(token_signer: Signer) -> Iterator[TokenServer]:
    """The token service: user ``bob`` (password in ``users``), anonymous pulls allowed."""
    with TokenServer(token_signer, {TOKEN_USER: secrets.token_hex(8)}) as server:
        yield server


@pytest.fixture()
def docker_registry_token(tmp_path: Path, token_server: TokenServer) -> Iterator[RegistryServer]:
    """docker-registry with ``auth: token`` against ``token_server``; its credentials are the token user's."""
    creds = (TOKEN_USER, token_server.users[TOKEN_USER])
    with servers.docker_registry(
        tmp_path / "registry-token", token=token_server, token_credentials=creds
    ) as server:
        yield server


@pytest.fixture()
def fault_proxy(docker_registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault-injecting, byte-counting proxy in front of the anonymous ``docker_registry``."""
    with FaultProxy(docker_registry) as proxy:
        yield proxy


@pytest.fixture()
def layout(tmp_path: Path) -> OCILayout:
    """An empty OCI image layout to build artifacts in (then ``push_layout`` them)."""
    return OCILayout(tmp_path / "layout")


@pytest.fixture()
def tiny_gguf(tmp_path: Path) -> Path:
    """A ~400 KiB random llama GGUF (2 layers, F32)."""
    return tiny_llama(tmp_path / "tiny-llama.gguf")
