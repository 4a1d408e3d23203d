"""Local GGUF files: a path given where a reference is expected (``./x.gguf``, ``/abs/x.gguf``, ``file://...``).

The file is read where it lies, the way llama.cpp's ``-m``, RamaLama's ``file://`` and Ollama's ``FROM ./x.gguf``
take it: never copied into the store (so ``list`` does not show it), never written (headers are read with
positional reads, llama.cpp maps the file read-only). A split model is named by its first shard; the others are
found beside it by llama.cpp's split names (``<prefix>-00002-of-00003.gguf``), as llama.cpp itself finds them.

A missing file, a directory or a later shard named instead of the first is a usage error (exit 2); a file that is
not GGUF, or shards that disagree, is a :class:`~modelctl.errors.GGUFError` (exit 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from modelctl import artifact, gguf, reference
from modelctl.errors import GGUFError, UsageError
from modelctl.fit.shapes import quantization

FILE_SCHEME = "file://"
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
"""llama.cpp's split file names (``llama_split_path``): shard numbers from 1, five digits."""


def path_of(text: str) -> Path:
    """The absolute path ``text`` names (``file://`` URLs percent-decoded, ``~`` expanded); symlinks are kept, so
    that llama.cpp finds a split model's shards beside the name the user gave."""
    raw = text
    if raw.startswith(FILE_SCHEME):
        raw = unquote(raw[len(FILE_SCHEME) :])
        if raw.startswith("localhost/"):
            raw = raw[len("localhost") :]
    if not raw:
        raise UsageError(f"{text!r} names no file", hint="give the path of a GGUF file, e.g. ./model.gguf")
    return Path(raw).expanduser().absolute()


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalGGUF:
    """A GGUF model on disk, read in place."""

    text: str
    """What the user typed (shown back in messages and as the model's name)."""
    shards: tuple[Path, ...]
    """Every file of the model, the first shard first (llama.cpp loads ``shards[0]`` and finds the rest)."""
    header: gguf.GGUFHeader
    """The merged header of every shard."""

    @property
    def path(self) -> Path:
        return self.shards[0]

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def short(self) -> str:
        """The file's name, for prompts and the API's model id."""
        return self.path.name

    def model(self) -> artifact.Model:
        """What the file says about itself, in the artifact's terms (no manifest, no chat template layer)."""
        return artifact.Model(
            format="file",
            manifest_digest="",
            architecture=self.header.architecture,
            quantization=quantization(self.header),
            weights_size=sum(p.stat().st_size for p in self.shards),
            size=sum(p.stat().st_size for p in self.shards),
        )


def find(text: str) -> LocalGGUF | None:
    """The local file ``text`` names (see :func:`modelctl.reference.is_file`), or None for a model reference."""
    return open_file(text) if reference.is_file(text) else None


def open_file(text: str) -> LocalGGUF:
    """Check the file (and a split model's other shards) and read the headers; nothing is written."""
    path = path_of(text)
    if not path.exists():
        raise UsageError(f"no such file: {path}", hint="give the path of a GGUF file, or a model reference")
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint="give the path of a GGUF file (the first shard of a split)")
    shards = _shards(path)
    for shard in shards:
        _check_magic(shard)
    headers = gguf.read_headers([gguf.FileSource(p) for p in shards])
    try:
        header = gguf.merge(headers)
    except GGUFError as exc:
        raise GGUFError(f"{path}: {exc.message}", hint="give every shard of the split model, unchanged") from None
    return LocalGGUF(text=text, shards=tuple(shards), header=header)


def _shards(path: Path) -> list[Path]:
    """The split model's files in order when ``path`` has llama.cpp's split name, else ``[path]``."""
    match = SPLIT_NAME.match(path.name)
    if match is None:
        return [path]
    number, count = int(match.group("no")), int(match.group("count"))
    if count < 1 or number < 1 or number > count:
        return [path]
    prefix = match.group("prefix")
    first = path.with_name(f"{prefix}-00001-of-{count:05d}.gguf")
    if number != 1:
        raise UsageError(
            f"{path.name} is shard {number} of {count} of a split model", hint=f"give the first shard: {first}"
        )
    shards = [path] + [path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(2, count + 1)]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise UsageError(
            f"{path.name} is split into {count} files but {', '.join(missing)} is not beside it",
            hint="put every shard in the same directory",
        )
    return shards


def _check_magic(path: Path) -> None:
    """A one-line error naming the file when it is not GGUF (before the header reader's generic one)."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") from None
    if magic != b"GGUF":
        raise GGUFError(f"{path} is not a GGUF file", hint="give a .gguf model file (llama.cpp's format)")
