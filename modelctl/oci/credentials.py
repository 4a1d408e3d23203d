"""Registry credentials as Docker keeps them: ``$DOCKER_CONFIG/config.json`` and credential helpers.

Lookup order for a registry (as the Docker CLI): ``credHelpers[host]``, then ``credsStore``, then ``auths``;
a helper (``docker-credential-<name>``) that is missing or fails yields nothing, never a crash, and the
``auths`` entry, if any, is used instead. Docker Hub's key is ``https://index.docker.io/v1/``; keys written as
URLs (``https://host``, ``host/v2/``) match their host. ``store_credentials``/``erase_credentials`` back
``modelctl login``/``logout``: they rewrite ``auths`` atomically (temp file, fsync, rename, mode 0600) and
keep everything else in the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl import atomic
from modelctl.config import Config
from modelctl.errors import IntegrityError, UsageError
from modelctl.oci import safejson

log = logging.getLogger(__name__)

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HELPER_TIMEOUT = 60.0
_MAX_FILE = 16 << 20
"""Bytes of Docker's config.json or a credential helper's answer read at most (they are a few KiB)."""
_IDENTITY_TOKEN_USER = "<token>"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret for one registry. ``repr``/``str`` never show the secret."""

    username: str
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)
    """An OAuth2 refresh token (``identitytoken``): exchanged at the token service instead of a password."""

    def __repr__(self) -> str:
        secret = "identity-token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, {secret}=<hidden>)"

    __str__ = __repr__


def canonical_registry(name: str) -> str:
    """``index.docker.io``/``registry-1.docker.io`` -> ``docker.io``; other hosts lowercased as given."""
    host = _host_of(name)
    return "docker.io" if host in _HUB_HOSTS else host


def server_key(registry: str) -> str:
    """The key Docker uses for ``registry`` in ``auths``, ``credHelpers`` and on a helper's stdin."""
    canonical = canonical_registry(registry)
    return DOCKER_HUB_KEY if canonical == "docker.io" else canonical


def lookup(config: Config, registry: str) -> Credentials | None:
    """Credentials for ``registry`` (a host[:port], a ``docker.io`` alias or a URL), or None."""
    doc = _read(_config_path(config), strict=False)
    canonical = canonical_registry(registry)
    helpers = doc.get("credHelpers")
    helper = _match(helpers, canonical) if isinstance(helpers, dict) else None
    if not isinstance(helper, str):
        store = doc.get("credsStore")
        helper = store if isinstance(store, str) and store else None
    if helper is not None:
        found = _run_helper(helper, server_key(canonical))
        if found is not None:
            return found
    auths = doc.get("auths")
    entry = _match(auths, canonical) if isinstance(auths, dict) else None
    return _from_entry(entry) if isinstance(entry, dict) else None


def store_credentials(config: Config, registry: str, username: str, password: str) -> Path:
    """Write ``auths[<registry>]`` for ``modelctl login``; return the file written."""
    if not username or ":" in username:
        raise UsageError("invalid username", hint="a username is non-empty and has no ':'")
    if not password:
        raise UsageError("empty password", hint="give a password or token with --password-stdin")
    path = _config_path(config)
    doc = _read(path, strict=True)
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"{path}: 'auths' is not an object", hint="fix or remove the file")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    auths[server_key(registry)] = {"auth": token}
    _write_atomic(path, doc)
    return path


def erase_credentials(config: Config, registry: str) -> bool:
    """Remove every ``auths`` entry for ``registry`` (``modelctl logout``); False when there was none."""
    path = _config_path(config)
    if not path.exists():
        return False
    doc = _read(path, strict=True)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return False
    canonical = canonical_registry(registry)
    doomed = [key for key in auths if canonical_registry(key) == canonical]
    if not doomed:
        return False
    for key in doomed:
        del auths[key]
    _write_atomic(path, doc)
    return True


def _config_path(config: Config) -> Path:
    return config.docker_config / "config.json"


def _host_of(key: str) -> str:
    """``https://Host:5000/v1/`` -> ``host:5000``."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def _match(table: dict[str, Any], canonical: str) -> Any:
    """The value for ``canonical`` in a Docker keyed table: the exact key first, then keys naming its host."""
    exact = server_key(canonical)
    if exact in table:
        return table[exact]
    for key, value in table.items():
        if isinstance(key, str) and canonical_registry(key) == canonical:
            return value
    return None


def _from_entry(entry: dict[str, Any]) -> Credentials | None:
    identity = entry.get("identitytoken")
    username, password = entry.get("username"), entry.get("password")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            log.debug("ignoring an auths entry whose 'auth' is not base64 of user:password")
            decoded = ""
        user, sep, secret = decoded.partition(":")
        if sep:
            username, password = user, secret
    if isinstance(identity, str) and identity:
        return Credentials(username if isinstance(username, str) else "", "", identity)
    if isinstance(username, str) and isinstance(password, str) and (username or password):
        return Credentials(username, password)
    return None


def _run_helper(helper: str, server: str) -> Credentials | None:
    if not _HELPER_NAME.fullmatch(helper):
        log.debug("ignoring credential helper with an invalid name")
        return None
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("credential helper %s unavailable: %s", program, type(exc).__name__)
        return None
    if done.returncode != 0:
        log.debug("credential helper %s found no credentials for %s", program, server)
        return None
    try:
        answer = safejson.loads(done.stdout, what=f"answer of {program}", max_size=_MAX_FILE)
    except IntegrityError as exc:
        log.debug("%s", exc)
        return None
    if not isinstance(answer, dict):
        return None
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        return None
    if username == _IDENTITY_TOKEN_USER:
        return Credentials("", "", secret)
    return Credentials(username, secret)


def _read(path: Path, *, strict: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if strict:
            raise UsageError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from None
        log.debug("cannot read %s: %s", path, exc.strerror)
        return {}
    try:
        doc = safejson.loads(raw, what=str(path), max_size=_MAX_FILE) if raw.strip() else {}
    except IntegrityError:
        doc = None
    if not isinstance(doc, dict):
        if strict:
            raise UsageError(f"{path} is not a JSON object", hint="fix or remove the file")
        log.debug("ignoring %s: not a JSON object", path)
        return {}
    return doc


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic.replacing(target, mode=0o600) as f:
        f.write(json.dumps(doc, indent="\t").encode() + b"\n")
