"""Settings, resolved once from the environment and passed down as a frozen value.

Nothing else in modelctl reads ``os.environ``: the CLI calls :func:`from_env` and hands the result to services.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelctl import mirrors as _mirrors
from modelctl.cpu import CPU_BUFFERS
from modelctl.errors import UsageError
from modelctl.mirrors import Mirror

ENV_VARS = (
    "MODELCTL_HOME",
    "MODELCTL_MIRRORS",
    "MODELCTL_INSECURE_REGISTRIES",
    "MODELCTL_PARTS",
    "MODELCTL_FIXED_PARTS",
    "MODELCTL_PART_SIZE",
    "MODELCTL_STALL_TIMEOUT",
    "MODELCTL_RETRIES",
    "MODELCTL_CPU_BUFFERS",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    home: Path
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """``MODELCTL_MIRRORS``: mirror URLs per registry (the short form; it wins over the file for a registry)."""
    mirror_hosts: Mapping[str, tuple[Mirror, ...]] = field(default_factory=dict)
    """The mirror file's hosts per registry (``mirrors.toml`` in ``config_dir``)."""
    config_dir: Path | None = None
    """Where modelctl's configuration files live: ``$MODELCTL_HOME`` when set, else the platform's user config
    directory (``~/.config/modelctl``)."""
    insecure_registries: frozenset[str] = frozenset()
    docker_config: Path = Path.home() / ".docker"
    parts: int = 8
    """Parallel Range streams per blob, at most (the download adds streams while they add throughput)."""
    fixed_parts: bool = False
    """``MODELCTL_FIXED_PARTS=1``: run ``parts`` streams from the start instead of probing for the count."""
    min_part_size: int = 32 << 20
    """Blobs smaller than ``parts * min_part_size`` get fewer parts; tiny blobs one."""
    stall_timeout: float = 30.0
    """Seconds without a byte before a part is cancelled and retried."""
    retries: int = 5
    connect_timeout: float = 10.0
    hf_token: str | None = None
    hf_endpoint: str | None = None
    cpu_buffers: str = "auto"
    """Extra CPU weight buffers llama.cpp may use (``modelctl.cpu``): auto (no AMX), all, none."""

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def ingest_dir(self) -> Path:
        return self.home / "ingest"

    def mirrors_for(self, registry: str) -> tuple[Mirror, ...]:
        """The hosts to ask before ``registry``, in order: the short form's when it names the registry, else the
        file's."""
        if registry in self.mirrors:
            return tuple(Mirror(url=url) for url in self.mirrors[registry])
        return tuple(self.mirror_hosts.get(registry, ()))

    def is_insecure(self, registry: str) -> bool:
        """Plain HTTP for loopback registries (as Docker does) and those listed in MODELCTL_INSECURE_REGISTRIES."""
        if registry.startswith("["):
            host = registry[1 : registry.index("]")] if "]" in registry else registry
        else:
            host = registry.rsplit(":", 1)[0]
        if registry in self.insecure_registries or host in self.insecure_registries:
            return True
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    home = env.get("MODELCTL_HOME")
    if home:
        home_path = config_dir = Path(home).expanduser()
    else:
        import platformdirs

        home_path = Path(platformdirs.user_data_dir("modelctl"))
        config_dir = Path(platformdirs.user_config_dir("modelctl"))
    _check_directory(home_path, f"MODELCTL_HOME={home}" if home else f"modelctl's data directory {home_path}")
    docker_config = (
        Path(env["DOCKER_CONFIG"]).expanduser() if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    )
    return Config(
        home=home_path,
        mirrors=parse_mirrors(env.get("MODELCTL_MIRRORS", "")),
        mirror_hosts=_mirrors.load(config_dir / _mirrors.FILE_NAME),
        config_dir=config_dir,
        insecure_registries=frozenset(
            x.strip() for x in env.get("MODELCTL_INSECURE_REGISTRIES", "").split(",") if x.strip()
        ),
        docker_config=docker_config,
        parts=_int(env, "MODELCTL_PARTS", 8, low=1, high=64),
        fixed_parts=bool(_int(env, "MODELCTL_FIXED_PARTS", 0, low=0, high=1)),
        min_part_size=_int(env, "MODELCTL_PART_SIZE", 32 << 20, low=1 << 16, high=1 << 40),
        stall_timeout=float(_int(env, "MODELCTL_STALL_TIMEOUT", 30, low=1, high=3600)),
        retries=_int(env, "MODELCTL_RETRIES", 5, low=0, high=100),
        hf_token=env.get("HF_TOKEN") or None,
        hf_endpoint=env.get("HF_ENDPOINT") or None,
        cpu_buffers=_choice(env, "MODELCTL_CPU_BUFFERS", CPU_BUFFERS),
    )


def _check_directory(path: Path, name: str) -> None:
    """UsageError unless ``path`` is a directory or can become one: a file there (or in place of a parent) would
    make ``list`` silently empty and ``pull`` fail half-way."""
    for part in (path, *path.parents):
        if part.is_dir():
            return
        if part.exists():
            where = "" if part == path else f" ({part} is a file)"
            raise UsageError(
                f"{name} is not a directory{where}",
                hint="point MODELCTL_HOME at a directory (modelctl creates it when it is missing)",
            )


def parse_mirrors(text: str) -> dict[str, tuple[str, ...]]:
    """``docker.io=http://127.0.0.1:5050,docker.io=https://m2`` -> ``{"docker.io": ("http://...", "https://m2")}``."""
    return {registry: tuple(m.url for m in hosts) for registry, hosts in _mirrors.parse_short(text).items()}


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise UsageError(f"{name}={raw!r} is not a known value", hint=f"use one of: {', '.join(choices)}")
    return raw


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer", hint=f"set {name} to a number") from None
    if not low <= value <= high:
        raise UsageError(f"{name}={value} is out of range", hint=f"use {low}..{high}")
    return value
