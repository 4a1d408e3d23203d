"""Where a server listens and how clients name it: ``HOST[:PORT]`` or a URL, and whether a host is loopback.
Small on purpose: ``modelctl ps`` and ``stop`` import it without the server's machinery."""

from __future__ import annotations

import ipaddress

from modelctl.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_host(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``http://HOST:PORT`` (MODELCTL_HOST) as (host, port); the port defaults to 8080."""
    raw = text.strip()
    for scheme in ("http://", "https://"):
        if raw.startswith(scheme):
            raw = raw[len(scheme) :]
    raw = raw.rstrip("/")
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port = rest.lstrip(":")
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    else:
        host, port = raw, ""
    if not host:
        raise UsageError(f"{text!r} names no host", hint="use HOST[:PORT], e.g. 127.0.0.1:8080")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} has no valid port", hint="use HOST[:PORT], e.g. 127.0.0.1:8080")
    return host, int(port)


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
