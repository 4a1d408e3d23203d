"""Registry mirrors as containerd's ``hosts.toml`` describes them: per registry, an ordered list of hosts to ask
before the registry itself, each saying what it may answer and how it must be spoken to.

A host with ``pull`` serves content by digest (blobs, manifests pinned by digest); one with ``resolve`` also
answers tags (and tag or referrer listings). Spegel names the upstream registry in a ``?ns=<registry>`` query
(``ns = true``), Dragonfly's dfdaemon in an ``X-Dragonfly-Registry`` header (``headers``). The file is
``mirrors.toml`` in the config directory; ``MODELCTL_MIRRORS=registry=url,...`` is the short form (every
capability, no query, no headers), and where it names a registry it replaces that registry's entry in the file.
Parsed once into frozen values; a mistake is a one-line ``UsageError`` naming the file, the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelctl.errors import UsageError

FILE_NAME = "mirrors.toml"
PULL = "pull"
RESOLVE = "resolve"
CAPABILITIES = frozenset({PULL, RESOLVE})
MAX_FILE = 1 << 20
"""Bytes of mirrors.toml read at most (a file of a few hundred hosts is a few KiB)."""
_HOST_KEYS = ("url", "capabilities", "ns", "headers", "ca", "insecure", "override_path")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HINT = "see docs/mirrors.md for the format"


@dataclass(frozen=True, kw_only=True, slots=True)
class Mirror:
    """One host to ask before the registry."""

    url: str
    """``scheme://host[:port][/path]``, no trailing slash."""
    capabilities: frozenset[str] = CAPABILITIES
    ns: bool = False
    """Add ``?ns=<registry>`` to every request (Spegel needs it to answer a tag)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Sent with every request to this host, never across a redirect to another origin."""
    ca: Path | None = None
    """A PEM file of the CA certificates this host's certificate is checked against (instead of the system's)."""
    insecure: bool = False
    """HTTPS without checking the certificate (containerd's ``skip_verify``)."""
    override_path: bool = False
    """The URL's path is the API root itself (``https://harbor/v2/proxy``), not a prefix of ``/v2``."""

    @property
    def api_root(self) -> str:
        """The URL that ``/<repository>/manifests/...`` is appended to."""
        return self.url if self.override_path else f"{self.url}/v2"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


def load(path: Path) -> dict[str, tuple[Mirror, ...]]:
    """The mirrors of ``path``; none when the file does not exist."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", hint="fix its permissions") from None
    if len(data) > MAX_FILE:
        raise UsageError(f"{path} is larger than {MAX_FILE >> 10} KiB", hint=_HINT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text", hint=_HINT) from None
    return parse(text, where=str(path), base=path.parent)


def parse(text: str, *, where: str, base: Path) -> dict[str, tuple[Mirror, ...]]:
    """Parse a mirrors file: ``[[registry."<name>".hosts]]`` tables, in the order they are to be tried.

    ``where`` names the file in errors; a relative ``ca`` path is relative to ``base``."""
    import tomllib  # only where there is a file: a 6 ms import every command would pay

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not valid TOML ({exc})", hint=_HINT) from None
    extra = sorted(set(doc) - {"registry"})
    if extra:
        raise UsageError(f"{where}: unknown top-level key {extra[0]!r}", hint=f"use [registry.\"NAME\"]; {_HINT}")
    registries = doc.get("registry", {})
    if not isinstance(registries, dict):
        raise UsageError(f"{where}: registry must be a table of registries", hint=_HINT)
    out: dict[str, tuple[Mirror, ...]] = {}
    for name, entry in registries.items():
        at = f"{where}: registry {name!r}"
        if not name or not isinstance(entry, dict) or set(entry) - {"hosts"}:
            raise UsageError(f"{at} must hold only a hosts list", hint=f'use [[registry."{name}".hosts]]; {_HINT}')
        hosts = entry.get("hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            raise UsageError(f"{at}: hosts must be a list of tables", hint=f'use [[registry."{name}".hosts]]')
        out[name] = tuple(_host(h, f"{at}, host {i + 1}", base) for i, h in enumerate(hosts))
    return out


def parse_short(text: str) -> dict[str, tuple[Mirror, ...]]:
    """``docker.io=http://127.0.0.1:5050,docker.io=https://m2`` (``MODELCTL_MIRRORS``): hosts with defaults."""
    out: dict[str, list[Mirror]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        registry, sep, url = item.partition("=")
        if not sep or not registry.strip() or not url.startswith(("http://", "https://")):
            raise UsageError(
                f"bad MODELCTL_MIRRORS entry {item!r}",
                hint="use REGISTRY=http(s)://HOST[:PORT], comma-separated",
            )
        out.setdefault(registry.strip(), []).append(Mirror(url=url.strip().rstrip("/")))
    return {k: tuple(v) for k, v in out.items()}


def _host(table: dict[str, Any], at: str, base: Path) -> Mirror:
    unknown = sorted(set(table) - set(_HOST_KEYS))
    if unknown:
        raise UsageError(f"{at}: unknown key {unknown[0]!r}", hint=f"a host takes {', '.join(_HOST_KEYS)}")
    url = _url(table.get("url"), at)
    capabilities = table.get("capabilities", sorted(CAPABILITIES))
    if (
        not isinstance(capabilities, list)
        or not capabilities
        or not all(isinstance(c, str) and c in CAPABILITIES for c in capabilities)
    ):
        raise UsageError(f"{at}: capabilities must list pull and/or resolve", hint='e.g. capabilities = ["pull"]')
    flags = {key: table.get(key, False) for key in ("ns", "insecure", "override_path")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise UsageError(f"{at}: {key} must be true or false", hint=f"write {key} = true")
    ca = table.get("ca")
    if ca is not None and (not isinstance(ca, str) or not ca):
        raise UsageError(f"{at}: ca must be the path of a PEM file", hint='e.g. ca = "/etc/ssl/mirror-ca.pem"')
    ca_path = (base / Path(ca).expanduser()) if ca else None
    if (ca_path is not None or flags["insecure"]) and not url.startswith("https://"):
        raise UsageError(f"{at}: ca and insecure apply to https:// hosts", hint="drop them or use an https:// url")
    if ca_path is not None and flags["insecure"]:
        raise UsageError(f"{at}: ca and insecure exclude each other", hint="keep ca: it checks the certificate")
    if ca_path is not None and not ca_path.is_file():
        raise UsageError(f"{at}: ca file {ca_path} does not exist", hint="give the path of the CA's PEM file")
    return Mirror(
        url=url,
        capabilities=frozenset(capabilities),
        ns=flags["ns"],
        headers=_headers(table.get("headers", {}), at),
        ca=ca_path,
        insecure=flags["insecure"],
        override_path=flags["override_path"],
    )


def _url(value: object, at: str) -> str:
    from urllib.parse import urlsplit

    hint = 'e.g. url = "http://127.0.0.1:30020"'
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise UsageError(f"{at}: url must be an http:// or https:// URL", hint=hint)
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not port_ok or not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError(
            f"{at}: url {value!r} must be scheme://host[:port][/path], without credentials or a query",
            hint=f"{hint}; a mirror's credentials come from `modelctl login HOST`",
        )
    return value.rstrip("/")


def _headers(value: object, at: str) -> tuple[tuple[str, str], ...]:
    hint = 'e.g. headers = { X-Dragonfly-Registry = "https://index.docker.io" }'
    if not isinstance(value, dict):
        raise UsageError(f"{at}: headers must be a table of names and values", hint=hint)
    out: list[tuple[str, str]] = []
    for name, raw in value.items():
        values = raw if isinstance(raw, list) else [raw]
        if not _TOKEN.fullmatch(name) or not all(_header_value(v) for v in values) or not values:
            raise UsageError(f"{at}: header {name!r} needs a name and printable ASCII values", hint=hint)
        if name.lower() in ("authorization", "host", "content-length", "range"):
            raise UsageError(
                f"{at}: header {name!r} is modelctl's to set",
                hint="credentials come from `modelctl login HOST`; drop the header",
            )
        out.extend((name, v) for v in values)
    return tuple(out)


def _header_value(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and all(c.isprintable() for c in value)
