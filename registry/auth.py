"""HTTP Basic authentication against an htpasswd file of bcrypt hashes (``$2y$``, ``$2b$``, ``$2a$``).

When configured, every write needs valid credentials; reads need them too unless anonymous pull is allowed.
bcrypt is slow on purpose, so a verified (user, password) pair is remembered (as a salted hash, in memory)
and checks run in a worker thread: a manifest GET with credentials costs a dictionary lookup, not a bcrypt.

Hostile input gets a 401 like any wrong password: a password is cut to bcrypt's 72 bytes (as htpasswd and Docker's
distribution do; bcrypt 5 raises beyond it), and an unknown user costs one bcrypt check against a dummy hash of
the same cost, so the answer's timing does not tell which user names exist.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path
from typing import Final

import bcrypt

from modelctl.errors import UsageError
from registry.errors import RegistryHTTPError

CHALLENGE: Final = 'Basic realm="modelctl"'
_CACHE_LIMIT: Final = 4096
_BCRYPT_MAX: Final = 72
_DEFAULT_COST: Final = 10


def load_htpasswd(path: Path) -> dict[str, bytes]:
    """Parse ``user:hash`` lines (blank lines and ``#`` comments skipped); only bcrypt hashes are accepted.

    A file that cannot be read or holds anything else is a UsageError: the operator's mistake, found at start-up."""
    users: dict[str, bytes] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(
            f"cannot read --htpasswd {path}: {reason}", hint="give an htpasswd file made by `htpasswd -B`"
        ) from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise UsageError(f"{path}:{number}: expected user:hash", hint="one `user:bcrypt-hash` per line")
        if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            raise UsageError(
                f"{path}:{number}: user {user!r} has no bcrypt hash (plaintext or another scheme)",
                hint="make the entry with `htpasswd -B` (bcrypt, $2y$)",
            )
        users[user] = hashed.encode()
    return users


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """Decode an ``Authorization: Basic`` header; None when absent or not Basic."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error, or non-ASCII text
        return None
    return (user, password) if sep else None


def _cost(hashed: bytes) -> int:
    """The cost field of ``$2b$12$...``; the default when it does not parse."""
    field = hashed.split(b"$")[2:3]
    return int(field[0]) if field and field[0].isdigit() and 4 <= int(field[0]) <= 31 else _DEFAULT_COST


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX], hashed)
    except ValueError:  # a malformed hash in the htpasswd file: no password matches it
        return False


class Authenticator:
    """Checks credentials for each request according to the access rules above."""

    def __init__(self, users: dict[str, bytes], *, allow_anonymous_pull: bool) -> None:
        self.users = users
        self.allow_anonymous_pull = allow_anonymous_pull
        self._salt = os.urandom(16)
        self._verified: set[bytes] = set()
        cost = max((_cost(h) for h in users.values()), default=_DEFAULT_COST)
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost)) if users else b""

    def _key(self, user: str, password: str) -> bytes:
        return hashlib.sha256(self._salt + user.encode() + b"\0" + password.encode()).digest()

    async def _valid(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            if self._dummy:  # the same bcrypt work as a wrong password, so timing does not reveal the name
                await asyncio.get_running_loop().run_in_executor(None, _checkpw, password.encode(), self._dummy)
            return False
        key = self._key(user, password)
        if key in self._verified:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(None, _checkpw, password.encode(), hashed)
        if ok:
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified.add(key)
        return ok

    async def check(self, authorization: str | None, *, write: bool) -> None:
        """Raise UNAUTHORIZED (401 with a Basic challenge) unless this request may proceed."""
        credentials = parse_basic(authorization)
        if credentials is None and authorization is None and self.allow_anonymous_pull and not write:
            return
        if credentials is not None and await self._valid(*credentials):
            return
        raise RegistryHTTPError(
            "UNAUTHORIZED",
            "authentication required" if credentials is None else "invalid username or password",
            headers={"WWW-Authenticate": CHALLENGE},
        )
