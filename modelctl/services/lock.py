"""Lockfiles for scripted pulls: record each reference with its manifest digest, later pull exactly those digests.

``models.lock`` is JSON (``{"version": 1, "models": [{"reference", "digest"}]}``), written atomically. A locked
pull never resolves a tag, and when every digest is already in the store it makes no network request at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from modelctl import atomic, reference
from modelctl.errors import IntegrityError, NotFound, UsageError
from modelctl.oci import safejson
from modelctl.reference import Reference
from modelctl.services.pull import PullResult

VERSION = 1
MAX_SIZE = 16 << 20
"""Bytes a lockfile may have (one line per model: a few KiB)."""


def write(path: Path, results: Sequence[PullResult]) -> None:
    entries = _existing(path) | {r.reference: str(r.digest) for r in results}
    doc = {"version": VERSION, "models": [{"reference": k, "digest": v} for k, v in sorted(entries.items())]}
    atomic.write(path, (json.dumps(doc, indent=2) + "\n").encode())  # a full disk: exit 8, the old lockfile kept


def check_target(path: Path) -> None:
    """Refuse, before anything is downloaded, a ``--lock`` path the pull could not write: a directory, a missing or
    unwritable directory, or a file that is not a lockfile (UsageError, exit 2; IntegrityError for the last)."""
    if path.is_dir():
        raise UsageError(f"lockfile {path} is a directory", hint=f"give --lock a file, e.g. {path / 'models.lock'}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"lockfile directory {parent} does not exist", hint="create it, or give --lock another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the lockfile in {parent}", hint="check its permissions")
    _existing(path)


def read(path: Path) -> list[Reference]:
    """The pinned references (``name:tag@digest``) of a lockfile."""
    if not path.is_file():
        raise NotFound(f"lockfile {path} does not exist", hint=f"create it with: modelctl pull --lock {path} REF...")
    return [reference.parse(e["reference"]).with_digest(e["digest"]) for e in _entries(path)]


def _existing(path: Path) -> dict[str, str]:
    """reference -> digest of the lockfile's entries, as written (a pull rewrites them without judging them)."""
    return {e["reference"]: e["digest"] for e in _entries(path)} if path.is_file() else {}


def _entries(path: Path) -> list[dict[str, str]]:
    try:
        doc = safejson.loads(path.read_bytes(), what=f"lockfile {path}", max_size=MAX_SIZE)
        models = doc["models"]
        if doc.get("version") != VERSION or not isinstance(models, list):
            raise ValueError
        for e in models:
            if not isinstance(e.get("reference"), str) or not isinstance(e.get("digest"), str):
                raise ValueError
        return list(models)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IntegrityError):
        raise IntegrityError(
            f"lockfile {path} is not a modelctl lockfile (version {VERSION})",
            hint="regenerate it with: modelctl pull --lock FILE REF...",
        ) from None
