"""What ``modelctl serve`` was asked to do, as one frozen value, and the checks that refuse an unsafe start."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from modelctl.errors import UsageError
from modelctl.services.run import RunOptions
from modelctl.services.serve.address import DEFAULT_HOST, DEFAULT_PORT, is_loopback, parse_host, url

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ServeOptions", "is_loopback", "parse_host", "parse_size", "url"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model: str | None = None
    """Loaded at start (``serve REF``): pulled first when missing, refused (exit 6) when it does not fit."""
    run: RunOptions = field(default_factory=RunOptions)
    """The load settings every model gets, as ``run``'s flags give them."""
    keep_alive: float = 300.0
    """Seconds an idle model stays loaded (``inf``: until evicted or stopped)."""
    memory: int | None = None
    """Bytes of RAM the loaded models may use together (None: what is free at start)."""
    max_queue: int = 16
    """Requests that may wait for one model; the next is answered 503 with Retry-After."""
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    allow_pull: bool = False
    allow_delete: bool = False

    def check(self) -> None:
        """Refuse to listen beyond this machine without an API key."""
        if not is_loopback(self.host) and not self.api_key:
            raise UsageError(
                f"serving on {self.host} would let anyone on the network use it",
                hint="set --api-key (or MODELCTL_API_KEY), or serve on 127.0.0.1",
            )
        if self.max_queue < 0:
            raise UsageError("--max-queue must be >= 0", hint="e.g. --max-queue 16")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``512MiB``, ``8G``, ``2GB``, ``1.5GiB`` or a plain number (powers of 1024 throughout)."""
    found = _SIZE.match(text)
    if not found:
        raise UsageError(f"{text!r} is not a size", hint="use e.g. 512MiB, 8GiB or a number of bytes")
    number, unit = float(found.group(1)), found.group(2).upper()
    return int(number * (1 << (10 * " KMGT".index(unit or " "))))
