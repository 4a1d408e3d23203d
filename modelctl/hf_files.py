"""Choosing the GGUF files of a Hugging Face repository for a quantisation tag. Pure logic, no I/O.

A GGUF repository on the Hub holds one model in several quantisations, named by convention:
``SmolLM2-135M-Instruct-Q4_K_M.gguf``, ``model.q8_0.gguf``, ``Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf`` (split:
every shard is needed, in order) and maybe a multimodal projector ``mmproj-model-f16.gguf``.

- No tag (or ``latest``): ``Q4_K_M``, else the available quantisation closest in bits per weight (ties go to the
  larger, better one), else the only unquantised-looking file.
- An explicit tag (``:Q8_0``, any case): that quantisation exactly, else NotFound listing what is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modelctl.errors import NotFound

DEFAULT_QUANT = "Q4_K_M"
DEFAULT_TAGS = frozenset({"latest", ""})

# Approximate bits per weight as llama.cpp's quantize tool lists them: only used to rank "closest".
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_1": 5.0,
    "Q4_K_L": 4.9,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "MXFP4": 4.25,
    "IQ4_XS": 4.25,
    "Q3_K_XL": 4.3,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "IQ3_M": 3.66,
    "Q3_K_S": 3.5,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "Q2_K": 2.96,
    "IQ2_M": 2.7,
    "Q2_K_S": 2.6,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "TQ2_0": 2.06,
    "IQ1_M": 1.75,
    "TQ1_0": 1.69,
    "IQ1_S": 1.56,
}

_QUANT = re.compile(r"(?:I?Q[1-8](?:_[0-9A-Z]+)*|B?F16|F32|TQ[12]_0|MXFP4(?:_MOE)?)", re.IGNORECASE)
_SHARD = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-./ ]")


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of a repository as the Hub lists it (``siblings`` with files metadata)."""

    path: str
    size: int | None = None
    sha256: str | None = None
    """The LFS sha256 (64 hex digits) the Hub reports; None for a file not stored in LFS."""


@dataclass(frozen=True, slots=True)
class Selection:
    quant: str | None
    """The chosen quantisation as the file names spell it, upper-cased; None for an unlabelled model."""
    shards: tuple[HubFile, ...]
    """GGUF weights in shard order (one file for an unsplit model)."""
    mmproj: HubFile | None = None

    @property
    def files(self) -> tuple[HubFile, ...]:
        return (*self.shards, self.mmproj) if self.mmproj else self.shards

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass(frozen=True, slots=True)
class _Group:
    quant: str | None
    base: str
    shards: tuple[HubFile, ...]
    complete: bool


def is_default(tag: str | None) -> bool:
    return tag is None or tag.lower() in DEFAULT_TAGS


def is_mmproj(path: str) -> bool:
    return "mmproj" in path.rsplit("/", 1)[-1].lower()


def shard_of(path: str) -> tuple[str, int, int] | None:
    """``x-00002-of-00003.gguf`` -> ``("x", 2, 3)``; None for an unsplit file."""
    m = _SHARD.match(path)
    if not m:
        return None
    return m["base"], int(m["no"]), int(m["count"])


def quant_of(path: str) -> str | None:
    """The quantisation a GGUF file name carries (the last token that looks like one), upper-cased."""
    name = path.rsplit("/", 1)[-1]
    shard = shard_of(name)
    stem = shard[0] if shard else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    for token in reversed(_SEPARATORS.split(stem)):
        if _QUANT.fullmatch(token):
            return token.upper()
    if "/" in path:  # ``Q4_K_M/model-00001-of-00002.gguf``: the folder names it
        folder = path.rsplit("/", 2)[-2]
        if _QUANT.fullmatch(folder):
            return folder.upper()
    return None


def _groups(files: Iterable[HubFile]) -> list[_Group]:
    by_key: dict[tuple[str | None, str], list[tuple[int, int, HubFile]]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf") or is_mmproj(f.path):
            continue
        shard = shard_of(f.path)
        base, no, count = shard if shard else (f.path, 1, 1)
        by_key.setdefault((quant_of(f.path), base), []).append((no, count, f))
    groups = []
    for (quant, base), members in by_key.items():
        members.sort(key=lambda m: m[0])
        count = members[0][1]
        complete = [m[0] for m in members] == list(range(1, count + 1)) and all(m[1] == count for m in members)
        groups.append(_Group(quant, base, tuple(m[2] for m in members), complete))
    groups.sort(key=lambda g: (g.base.count("/"), len(g.shards) > 1, g.base))
    return groups


def available(files: Iterable[HubFile]) -> list[str]:
    """The quantisations a repository offers (complete models only), best first."""
    quants = {g.quant for g in _groups(files) if g.complete and g.quant}
    return sorted(quants, key=lambda q: (-BITS_PER_WEIGHT.get(q, 0.0), q))


def is_safe_path(path: str) -> bool:
    """Whether a listed file name stays inside the download directory: relative, no ``..``, no backslash, no
    control characters. The Hub never lists anything else; an endpoint that does is not trusted with it."""
    if not path or path.startswith("/") or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def choose(files: Sequence[HubFile], tag: str | None, *, repo: str = "the repository") -> Selection:
    """The files to pull for ``tag``; NotFound (exit 3) with the available quantisations otherwise.

    Names that could escape the download directory are never considered."""
    files = [f for f in files if is_safe_path(f.path)]
    groups = _groups(files)
    complete = [g for g in groups if g.complete]
    if not groups:
        raise NotFound(f"{repo} has no GGUF file", hint="modelctl pulls GGUF repositories (look for a -GGUF repo)")
    offered = ", ".join(available(files)) or "none labelled"
    if is_default(tag):
        group = _closest(complete, DEFAULT_QUANT)
    else:
        assert tag is not None
        want = tag.upper()
        matches = [g for g in complete if g.quant == want]
        group = matches[0] if matches else None
        if group is None:
            broken = [g for g in groups if g.quant == want]
            if broken:
                raise NotFound(
                    f"{repo}: the {want} model is incomplete (only shards {_numbers(broken[0])} are listed)",
                    hint=f"pick another quantisation: {offered}",
                )
            raise NotFound(f"{repo} has no {want} GGUF file", hint=f"available quantisations: {offered}")
    if group is None:
        raise NotFound(f"{repo} has no complete GGUF model", hint=f"available quantisations: {offered}")
    return Selection(group.quant, group.shards, _mmproj(files, group))


def _numbers(group: _Group) -> str:
    return ",".join(str(s[1]) for f in group.shards if (s := shard_of(f.path)))


def _closest(groups: Sequence[_Group], target: str) -> _Group | None:
    exact = [g for g in groups if g.quant == target]
    if exact:
        return exact[0]
    goal = BITS_PER_WEIGHT[target]
    ranked = [g for g in groups if g.quant in BITS_PER_WEIGHT]
    if ranked:
        return min(ranked, key=lambda g: (abs(BITS_PER_WEIGHT[g.quant or ""] - goal), -BITS_PER_WEIGHT[g.quant or ""]))
    labelled = [g for g in groups if g.quant]
    if labelled:
        return labelled[0]
    return groups[0] if len(groups) == 1 else None


_MMPROJ_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")


def _mmproj(files: Sequence[HubFile], group: _Group) -> HubFile | None:
    """The multimodal projector: one beside the model first, f16 preferred."""
    candidates = [f for f in files if f.path.lower().endswith(".gguf") and is_mmproj(f.path)]
    if not candidates:
        return None
    folder = group.shards[0].path.rpartition("/")[0]

    def rank(f: HubFile) -> tuple[int, int, str]:
        quant = quant_of(f.path)
        pref = _MMPROJ_PREFERENCE.index(quant) if quant in _MMPROJ_PREFERENCE else len(_MMPROJ_PREFERENCE)
        return (0 if f.path.rpartition("/")[0] == folder else 1, pref, f.path)

    return min(candidates, key=rank)
