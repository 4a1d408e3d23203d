"""Model references: parse and normalise names like ``ai/llama3.1:8B-Q4_K_M`` the way Docker Model Runner does.

Pure values, no I/O. Rules (FACTS.md section 2): a first component with ``.`` or ``:`` (or ``localhost``) is a
registry host; no host means ``docker.io``; a bare name gets the ``ai/`` namespace (``library/`` on Ollama's
registry); repositories are lowercased, tags keep their case; no tag and no digest means ``latest``.
``hf.co/<org>/<repo>[:QUANT]`` is a Hugging Face reference: its repository keeps its case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelctl.digest import Digest
from modelctl.errors import IntegrityError, InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"
HUGGING_FACE = "hf.co"
OLLAMA_REGISTRY = "registry.ollama.ai"

_DOCKER_ALIASES = {"index.docker.io", "registry-1.docker.io", "docker.io"}
_HF_ALIASES = {"hf.co", "huggingface.co"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HF_COMPONENT = re.compile(r"[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_NAME = 255

_TAG_HELP = "tags are 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
_NAME_HELP = "repository components are lowercase letters and digits, joined by '.', '_', '__' or '-'"


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised model reference. ``str()`` gives the canonical form, which parses back to an equal value."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def is_hugging_face(self) -> bool:
        return self.registry == HUGGING_FACE

    @property
    def is_ollama(self) -> bool:
        return self.registry == OLLAMA_REGISTRY

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, _check_tag(tag, tag), None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, _check_digest(digest, digest))

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def short(self) -> str:
        """The familiar form users type: ``ai/smollm2:135M-Q4_1`` (the Docker Hub host left out)."""
        text = str(self)
        prefix = DEFAULT_REGISTRY + "/"
        return text[len(prefix) :] if text.startswith(prefix) else text


FILE_PREFIXES = ("/", "./", "../", "~", "file://")


def is_file(text: str) -> bool:
    """Whether ``text`` names a local GGUF file instead of a model (:mod:`modelctl.sources.local` reads it): it
    starts like a path (``/``, ``./``, ``../``, ``~``) or with ``file://``, or ends in ``.gguf``."""
    return text.startswith(FILE_PREFIXES) or text.lower().endswith(".gguf")


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; raise :class:`InvalidReference` with a hint on bad input."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference {original!r}", hint="give a name such as ai/smollm2:135M-Q4_K_M")
    if text.startswith("ollama://"):
        text = f"{OLLAMA_REGISTRY}/{text[len('ollama://') :]}"
    elif "://" in text:
        raise InvalidReference(
            f"invalid reference {original!r}: URL schemes are not part of a model name",
            hint="drop the scheme (ollama:// is the only one understood)",
        )

    digest: Digest | None = None
    if "@" in text:
        text, pinned = text.split("@", 1)
        digest = _check_digest(pinned, original)

    registry, remainder = _split_registry(text)
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        tag = _check_tag(tag, original)

    if registry in _HF_ALIASES:
        registry = HUGGING_FACE
        repository = _check_repository(remainder, original, hugging_face=True)
    else:
        if registry in _DOCKER_ALIASES:
            registry = DEFAULT_REGISTRY
        registry = registry.lower()
        repository = _check_repository(remainder.lower(), original, hugging_face=False)
        if "/" not in repository:
            namespace = "library" if registry == OLLAMA_REGISTRY else DEFAULT_NAMESPACE
            if registry in (DEFAULT_REGISTRY, OLLAMA_REGISTRY):
                repository = f"{namespace}/{repository}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    ref = Reference(registry, repository, tag, digest)
    if len(ref.name) > _MAX_NAME:
        raise InvalidReference(f"invalid reference {original!r}: name longer than {_MAX_NAME} characters")
    return ref


def _split_registry(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return registry_host(first, text), rest
    return DEFAULT_REGISTRY, text


def registry_host(host: str, original: str | None = None) -> str:
    """``host`` if it is a registry address (``host[:port]``, ``[v6]:port``) with a port of 1-65535, else
    InvalidReference naming ``original`` (the reference it came from; ``host`` itself by default)."""
    what = f"invalid reference {original!r}" if original is not None else f"invalid registry {host!r}"
    if not _HOST.fullmatch(host):
        raise InvalidReference(f"{what}: bad registry host {host!r}", hint="use host[:port]/repository")
    port = "" if host.endswith("]") else host.rpartition(":")[2]
    if port.isdigit() and not 0 < int(port) < 65536:
        raise InvalidReference(f"{what}: port {port} of {host!r} is out of range", hint="ports are 1-65535")
    return host


def _check_repository(path: str, original: str, *, hugging_face: bool) -> str:
    if not path:
        raise InvalidReference(f"invalid reference {original!r}: missing repository name")
    pattern = _HF_COMPONENT if hugging_face else _COMPONENT
    for component in path.split("/"):
        if not pattern.fullmatch(component):
            raise InvalidReference(f"invalid reference {original!r}: bad name component {component!r}", hint=_NAME_HELP)
    if hugging_face and path.count("/") != 1:
        raise InvalidReference(
            f"invalid reference {original!r}: Hugging Face references are hf.co/<org>/<repo>[:QUANT]"
        )
    return path


def _check_tag(tag: str, original: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidReference(f"invalid reference {original!r}: bad tag {tag!r}", hint=_TAG_HELP)
    return tag


def _check_digest(digest: str, original: str) -> Digest:
    try:
        return Digest(digest)
    except IntegrityError:
        raise InvalidReference(
            f"invalid reference {original!r}: bad digest {digest!r}",
            hint="digests are sha256: followed by 64 lowercase hex digits (or sha512: and 128)",
        ) from None
