"""Model cards: one Markdown file per model repository, with YAML front matter checked against a schema.

A card describes a repository (``ai/llama3.1``): who made the model, its license, languages, knowledge cutoff,
capabilities, the architecture hyper-parameters of each size (``shape``), the variants (tags) with their size
and memory estimate, benchmark figures and intended uses, then free Markdown. The schema is this module: every
field is checked, unknown fields are refused (a typo must not pass silently), and a broken card raises
:class:`CardError` naming the file and the field.

The cards shipped with modelctl live in the package (``modelctl/_cards/<namespace>/<name>.md``, exposed at the
top of the repository as ``cards/``). This module is pure: text in, frozen values out. It does not compute memory
estimates (that is the fit layer's job, see ``modelctl.services.catalog``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from modelctl.errors import CardError

_CUTOFF = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_URL = re.compile(r"^https://\S+$")
MODALITIES = frozenset({"text", "image", "audio", "video"})
MAX_CARD = 1 << 20
"""Bytes a card may have (an attached card comes from a registry: untrusted input)."""
_CONSTRUCTOR_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, RecursionError)
"""What PyYAML's safe constructors raise besides YAMLError on hostile scalars (``2020-02-30``, ``!!int z``,
``!!timestamp x``), and its pure-Python loader on nesting libyaml would refuse."""


@dataclass(frozen=True, kw_only=True, slots=True)
class License:
    name: str
    url: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Capabilities:
    tool_calling: bool
    modalities: tuple[str, ...]
    """Input modalities, ``text`` first (``image`` for vision models)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Shape:
    """Architecture hyper-parameters of one model size, as its GGUF header states them."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    context_length: int
    """The trained context (tokens)."""
    tied_embeddings: bool = False
    """No separate output matrix: the output layer reuses the token embeddings."""
    head_dim: int | None = None
    """Key/value length per head when it is not ``n_embd / n_head`` (Gemma)."""
    sliding_window: int = 0
    """Tokens a sliding-window layer attends to (0: none)."""
    attention_bias: bool = False
    """Q/K/V projections carry bias vectors (Qwen2)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    tag: str
    parameters: str
    """The size label, a key of the card's ``shape`` (``8B``)."""
    quantization: str
    context_window: int
    size: int | None = None
    """Bytes of weights, computed from the shape and quantisation (``scripts/update_cards.py`` writes it)."""
    vram: int | None = None
    """Bytes of GPU memory with every layer offloaded at ``modelctl run``'s default settings (computed)."""
    latest: bool = False
    """``latest`` points to this variant."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Benchmark:
    name: str
    parameters: str
    """Which size the figure is for (a key of ``shape``)."""
    score: float
    note: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Card:
    repository: str
    title: str
    provider: str
    architecture: str
    license: License
    languages: tuple[str, ...]
    cutoff: str | None
    """Knowledge cutoff, ``YYYY-MM``."""
    capabilities: Capabilities
    shape: Mapping[str, Shape]
    """Size label -> hyper-parameters."""
    variants: tuple[Variant, ...]
    benchmarks: tuple[Benchmark, ...] = ()
    intended_uses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    """Where the facts come from (the publisher's pages)."""
    body: str = ""
    """The Markdown after the front matter."""
    path: str = field(default="", compare=False)
    """Where the card was read from (for messages)."""

    @property
    def latest(self) -> Variant | None:
        return next((v for v in self.variants if v.latest), None)

    def variant(self, tag: str | None) -> Variant | None:
        """The variant a tag names (``latest`` and no tag mean the one ``latest`` points to)."""
        if tag is None or tag == "latest":
            return self.latest
        return next((v for v in self.variants if v.tag == tag), None)

    def to_json(self) -> dict[str, Any]:
        """The front matter as a JSON document (what ``modelctl card --json`` prints)."""
        return {
            "repository": self.repository,
            "title": self.title,
            "provider": self.provider,
            "architecture": self.architecture,
            "license": {"name": self.license.name, "url": self.license.url},
            "languages": list(self.languages),
            "cutoff": self.cutoff,
            "capabilities": {
                "tool_calling": self.capabilities.tool_calling,
                "modalities": list(self.capabilities.modalities),
            },
            "shape": {
                label: {k: getattr(s, k) for k in _SHAPE_FIELDS if getattr(s, k) is not None}
                for label, s in self.shape.items()
            },
            "variants": [
                {
                    "tag": v.tag,
                    "parameters": v.parameters,
                    "quantization": v.quantization,
                    "context_window": v.context_window,
                    "size": v.size,
                    "vram": v.vram,
                    "latest": v.latest,
                }
                for v in self.variants
            ],
            "benchmarks": [
                {"name": b.name, "parameters": b.parameters, "score": b.score, "note": b.note} for b in self.benchmarks
            ],
            "intended_uses": list(self.intended_uses),
            "sources": list(self.sources),
        }


_SHAPE_FIELDS = tuple(Shape.__dataclass_fields__)


# --- parsing


def split(text: str, *, source: str) -> tuple[str, str]:
    """(front matter YAML, Markdown body); the card must open with a ``---`` line and close the block with one."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        raise CardError(f"{source}: no YAML front matter", hint="a card starts with a '---' line")
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    raise CardError(f"{source}: front matter is not closed", hint="end it with a '---' line")


def parse(text: str, *, source: str = "card") -> Card:
    """Parse and validate a card; raise :class:`CardError` naming ``source`` and the field."""
    if len(text.encode()) > MAX_CARD:
        raise CardError(f"{source}: card is larger than {MAX_CARD} bytes")
    import yaml

    front, body = split(text, source=source)
    try:
        doc = yaml.load(front, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~10x faster
    except (yaml.YAMLError, *_CONSTRUCTOR_ERRORS) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CardError(f"{source}: front matter is not valid YAML{where}", hint=why) from None
    return _card(_Fields(doc, source, ""), body, source)


class _Fields:
    """A mapping being validated: typed getters that name the file and the dotted field on error."""

    def __init__(self, doc: object, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        if not isinstance(doc, dict):
            raise self.error("", f"must be a mapping, not {_kind(doc)}")
        self.doc: dict[str, Any] = doc

    def error(self, key: str, problem: str) -> CardError:
        name = f"{self.prefix}{key}" or "front matter"
        return CardError(f"{self.source}: {name}: {problem}")

    def only(self, allowed: Sequence[str]) -> None:
        unknown = sorted(str(k) for k in self.doc if k not in allowed)
        if unknown:
            raise self.error(unknown[0], f"unknown field (expected one of: {', '.join(allowed)})")

    def raw(self, key: str, *, required: bool = True) -> Any:
        if key not in self.doc or self.doc[key] is None:
            if required:
                raise self.error(key, "missing")
            return None
        return self.doc[key]

    def string(self, key: str, *, required: bool = True, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, f"must be a string, not {_kind(value)}")
        text = str(value).strip()
        if not text:
            raise self.error(key, "must not be empty")
        if pattern is not None and not pattern.fullmatch(text):
            raise self.error(key, f"{text!r} does not match {pattern.pattern}")
        return text

    def text(self, key: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self.string(key, pattern=pattern)
        assert value is not None
        return value

    def integer(self, key: str, *, required: bool = True, low: int = 1) -> int | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_kind(value)}")
        if value < low:
            raise self.error(key, f"must be at least {low}, not {value}")
        return value

    def count(self, key: str) -> int:
        value = self.integer(key)
        assert value is not None
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_kind(value)}")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_kind(value)}")
        return value

    def strings(self, key: str, *, required: bool = True, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        value = self.raw(key, required=required)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float) or not str(item).strip():
                raise self.error(f"{key}[{i}]", "must be a non-empty string")
            if pattern is not None and not pattern.fullmatch(str(item)):
                raise self.error(f"{key}[{i}]", f"{item!r} does not match {pattern.pattern}")
            out.append(str(item).strip())
        return tuple(out)

    def sub(self, key: str, *, required: bool = True) -> _Fields | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        return _Fields(value, self.source, f"{self.prefix}{key}.")

    def items(self, key: str, *, required: bool = True) -> Iterator[_Fields]:
        value = self.raw(key, required=required)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {_kind(value)}")
        for i, item in enumerate(value):
            yield _Fields(item, self.source, f"{self.prefix}{key}[{i}].")


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "empty"}.get(
        type(value), type(value).__name__
    )


_CARD_FIELDS = (
    "repository",
    "title",
    "provider",
    "architecture",
    "license",
    "languages",
    "cutoff",
    "capabilities",
    "shape",
    "variants",
    "benchmarks",
    "intended_uses",
    "sources",
)


def _card(f: _Fields, body: str, source: str) -> Card:
    f.only(_CARD_FIELDS)
    lic = f.sub("license")
    assert lic is not None
    lic.only(("name", "url"))
    caps = f.sub("capabilities")
    assert caps is not None
    caps.only(("tool_calling", "modalities"))
    modalities = caps.strings("modalities")
    for i, m in enumerate(modalities):
        if m not in MODALITIES:
            raise caps.error(f"modalities[{i}]", f"{m!r} is not one of {', '.join(sorted(MODALITIES))}")
    shapes = f.sub("shape")
    assert shapes is not None
    shape = {str(label): _shape(shapes.sub(str(label))) for label in shapes.doc}
    if not shape:
        raise f.error("shape", "must name at least one size")
    variants = tuple(_variant(v) for v in f.items("variants"))
    if not variants:
        raise f.error("variants", "must list at least one variant")
    tags = [v.tag for v in variants]
    for i, v in enumerate(variants):
        if v.tag in tags[:i]:
            raise f.error(f"variants[{i}].tag", f"{v.tag!r} is listed twice")
        if v.tag == "latest":
            raise f.error(f"variants[{i}].tag", "'latest' is not a variant: mark one variant with latest: true")
        if v.parameters not in shape:
            raise f.error(f"variants[{i}].parameters", f"{v.parameters!r} has no entry in shape")
    if sum(v.latest for v in variants) > 1:
        raise f.error("variants", "more than one variant is marked latest")
    benchmarks = tuple(_benchmark(b) for b in f.items("benchmarks", required=False))
    for i, b in enumerate(benchmarks):
        if b.parameters not in shape:
            raise f.error(f"benchmarks[{i}].parameters", f"{b.parameters!r} has no entry in shape")
    return Card(
        repository=f.text("repository", pattern=_REPOSITORY),
        title=f.text("title"),
        provider=f.text("provider"),
        architecture=f.text("architecture"),
        license=License(name=lic.text("name"), url=lic.text("url", pattern=_URL)),
        languages=f.strings("languages"),
        cutoff=f.string("cutoff", required=False, pattern=_CUTOFF),
        capabilities=Capabilities(tool_calling=caps.flag("tool_calling"), modalities=modalities),
        shape=shape,
        variants=variants,
        benchmarks=benchmarks,
        intended_uses=f.strings("intended_uses", required=False),
        sources=f.strings("sources", required=False, pattern=_URL),
        body=body.strip("\n") + "\n" if body.strip() else "",
        path=source,
    )


def _shape(f: _Fields | None) -> Shape:
    assert f is not None
    f.only(_SHAPE_FIELDS)
    n_embd, n_head = f.count("n_embd"), f.count("n_head")
    n_head_kv = f.count("n_head_kv")
    head_dim = f.integer("head_dim", required=False)
    if head_dim is None and n_embd % n_head:
        raise f.error("head_dim", f"missing, and n_embd {n_embd} is not a multiple of n_head {n_head}")
    if n_head % n_head_kv:
        raise f.error("n_head_kv", f"{n_head_kv} does not divide n_head {n_head}")
    return Shape(
        n_layer=f.count("n_layer"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=f.count("n_ff"),
        n_vocab=f.count("n_vocab"),
        context_length=f.count("context_length"),
        tied_embeddings=f.flag("tied_embeddings"),
        head_dim=head_dim,
        sliding_window=f.integer("sliding_window", required=False, low=0) or 0,
        attention_bias=f.flag("attention_bias"),
    )


def _variant(f: _Fields) -> Variant:
    f.only(("tag", "parameters", "quantization", "context_window", "size", "vram", "latest"))
    return Variant(
        tag=f.text("tag", pattern=_TAG),
        parameters=f.text("parameters"),
        quantization=f.text("quantization"),
        context_window=f.count("context_window"),
        size=f.integer("size", required=False),
        vram=f.integer("vram", required=False),
        latest=f.flag("latest"),
    )


def _benchmark(f: _Fields) -> Benchmark:
    f.only(("name", "parameters", "score", "note"))
    return Benchmark(
        name=f.text("name"),
        parameters=f.text("parameters"),
        score=f.number("score"),
        note=f.string("note", required=False),
    )


# --- the bundled cards


def bundled_root() -> Traversable:
    """The directory of the cards shipped with modelctl (package data)."""
    return resources.files("modelctl") / "_cards"


def bundled_text(repository: str) -> tuple[str, str] | None:
    """(text, source) of the bundled card of ``repository`` (``ai/llama3.1``), or None."""
    if not _REPOSITORY.fullmatch(repository) or ".." in repository:
        return None
    node = bundled_root()
    for part in repository.split("/")[:-1]:
        node = node / part
    node = node / f"{repository.rsplit('/', 1)[-1]}.md"
    if not node.is_file():
        return None
    return node.read_text(encoding="utf-8"), f"cards/{repository}.md"


def bundled_card(repository: str) -> Card | None:
    """The bundled card of ``repository``, parsed (CardError when it is broken), or None."""
    found = bundled_text(repository)
    return parse(found[0], source=found[1]) if found else None


def bundled() -> list[Card]:
    """Every bundled card, sorted by repository."""
    out: list[Card] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".md"):
                out.append(parse(child.read_text(encoding="utf-8"), source=f"cards/{prefix}{child.name}"))

    root = bundled_root()
    if root.is_dir():
        walk(root, "")
    return sorted(out, key=lambda c: c.repository)


# --- rewriting computed values


def with_values(text: str, values: Mapping[str, Mapping[str, int]], *, source: str = "card") -> str:
    """``text`` with each variant's computed fields (``size``, ``vram``) set to ``values[tag]``.

    A line edit of the front matter: comments, order and the body stay as they are; a field the variant lacks is
    added after its other fields.
    """
    front, body = split(text, source=source)
    lines = front.splitlines(keepends=True)
    out: list[str] = []
    start = re.compile(r"^(\s*)-\s+tag:\s*['\"]?([^'\"\s#]+)")
    block: list[str] = []
    tag: str | None = None
    indent = ""

    def flush() -> None:
        if tag is None or tag not in values:
            out.extend(block)
            return
        want = dict(values[tag])
        done: list[str] = []
        for line in block:
            m = re.match(r"^(\s*)(-\s+)?(\w+):", line)
            key = m.group(3) if m else None
            if key in want and m is not None:
                lead = m.group(1) + (m.group(2) or "")
                done.append(f"{lead}{key}: {want.pop(key)}\n")
            else:
                done.append(line)
        last = len(done)
        while last > 1 and not done[last - 1].strip():
            last -= 1
        extra = [f"{indent}{k}: {v}\n" for k, v in want.items()]
        out.extend(done[:last] + extra + done[last:])

    in_variants = False
    for line in lines:
        top = re.match(r"^(\w+):", line)
        if top:
            if in_variants:
                flush()
                block, tag = [], None
            in_variants = top.group(1) == "variants"
            out.append(line)
            continue
        m = start.match(line)
        if in_variants and m:
            flush()
            block, tag = [line], m.group(2)
            indent = m.group(1) + "  "
            continue
        if in_variants and tag is not None:
            block.append(line)
        else:
            out.append(line)
    if in_variants:
        flush()
    return "---\n" + "".join(out) + "---\n" + body
