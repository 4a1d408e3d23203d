"""verify: re-hash the store's blobs (all of them, or the named models'), report each damaged one with the models
that use it, and with ``repair`` fetch them again from each model's source.

A blob is damaged when it is missing, not a regular file, of the wrong size or of the wrong content. The repair
removes the damaged file first (its bytes are worthless, and the download engine would take a file of the right
size for a finished download), then pulls each model that used it through the ordinary pull, pinned to the
manifest it had, so the model comes back exactly as it was. When a source cannot give the bytes back (offline,
gone), the model stays tagged, the report says it is incomplete and how to get it back: nothing is untagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelctl import reference
from modelctl.config import Config
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, ModelctlError, NotFound, RegistryError, UsageError
from modelctl.oci.descriptor import Descriptor
from modelctl.reference import Reference
from modelctl.services import pull
from modelctl.store import Layout, graph
from modelctl.store import models as local
from modelctl.store import verify as blobs
from modelctl.store.directory import blob_files

PROGRESS_FROM = 1 << 20
"""Blobs smaller than this (manifests, configs) are hashed without a progress bar of their own."""
EXIT_UNREACHABLE = RegistryError.exit_code


@dataclass(frozen=True, kw_only=True, slots=True)
class Damaged:
    """A damaged blob, where it is, and the tagged models that use it."""

    finding: blobs.Finding
    path: Path
    models: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {**self.finding.to_json(), "path": str(self.path), "models": list(self.models)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Incomplete:
    """A model the repair could not restore: why (its source's error), and that error's exit code."""

    reference: str
    error: str
    exit_code: int

    @property
    def unreachable(self) -> bool:
        return self.exit_code == EXIT_UNREACHABLE

    def fix(self) -> str:
        short = reference.parse(self.reference).short
        if self.unreachable:
            return f"once its registry is reachable, run: modelctl verify --repair {short} (or modelctl pull {short})"
        return f"run: modelctl pull {short} (from a source that has it), or modelctl load it from an archive"

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "error": self.error, "exit_code": self.exit_code, "fix": self.fix()}


@dataclass(kw_only=True, slots=True)
class Report:
    """What ``modelctl verify`` found and, with ``--repair``, did."""

    blobs: int = 0
    bytes: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    repaired: bool = False
    removed: list[Digest] = field(default_factory=list)
    """Damaged blob files deleted by the repair."""
    restored: list[str] = field(default_factory=list)
    incomplete: list[Incomplete] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error() is None

    def error(self) -> ModelctlError | None:
        """The one-line error the command ends with (exit 5, or 7 when only unreachable sources are left)."""
        if not self.damaged or (self.repaired and not self.incomplete):
            return None
        if not self.repaired:
            models = _ordered(m for d in self.damaged for m in d.models)
            shorts = " ".join(reference.parse(m).short for m in models)
            used = f", used by {len(models)} model(s)" if models else ""
            return IntegrityError(
                f"{len(self.damaged)} damaged blob(s) in the store{used}",
                hint=f"run: modelctl verify --repair {shorts}".rstrip(),
            )
        names = ", ".join(reference.parse(i.reference).short for i in self.incomplete)
        message = f"{len(self.incomplete)} model(s) incomplete after the repair: {names}"
        if all(i.unreachable for i in self.incomplete):
            return RegistryError(
                f"{message}: their source could not be reached",
                hint="run modelctl verify --repair again once it is reachable",
            )
        return IntegrityError(f"{message}: their source could not give the blobs back", hint="see the lines above")

    def to_json(self) -> dict[str, object]:
        repair = None
        if self.repaired:
            repair = {
                "removed": list(self.removed),
                "restored": list(self.restored),
                "incomplete": [i.to_json() for i in self.incomplete],
            }
        return {
            "ok": self.ok,
            "checked": {"blobs": self.blobs, "bytes": self.bytes},
            "damaged": [d.to_json() for d in self.damaged],
            "repair": repair,
        }


def verify(config: Config, refs: Sequence[str], reporter: pull.Reporter, *, repair: bool = False) -> Report:
    """Re-hash the blobs of the models ``refs`` names (every blob of the store when empty); repair if asked."""
    store = local.layout(config)
    report = Report(repaired=repair)
    targets = _targets(store, refs)
    nodes = graph.scan(store.blobs_dir)
    sizes = _expected_sizes(nodes, store.roots())
    if refs:
        wanted = graph.reachable(nodes, [desc for _, desc in targets])
    else:
        wanted = graph.reachable(nodes, store.roots()) | {digest for digest, _ in blob_files(store.blobs_dir)}
    findings: list[blobs.Finding] = []
    show = pull.hashing(reporter)

    def hashed(digest: Digest, total: int, done: int) -> None:
        if total >= PROGRESS_FROM:
            show(digest, total, done)
        if done == total:
            report.bytes += total

    for digest in sorted(wanted):
        finding = blobs.check(store, digest, sizes.get(digest), hashed)
        report.blobs += 1
        if finding is not None:
            findings.append(finding)
    report.damaged = _with_users(store, findings)
    if repair and report.damaged:
        _repair(config, store, report, reporter)
    return report


def _targets(store: Layout, refs: Sequence[str]) -> list[tuple[str, Descriptor]]:
    """The (name, manifest) entries ``refs`` name, read from the index alone (a damaged manifest is not read)."""
    found: list[tuple[str, Descriptor]] = []
    for text in refs:
        matches = local.find(store, text)
        if not matches:
            raise NotFound(f"model {text} is not in the local store", hint="see: modelctl list")
        if len({desc.digest for _, desc in matches}) > 1:
            raise UsageError(f"{text} matches several models", hint="give more of the model ID or the full reference")
        found.extend(matches)
    return found


def _expected_sizes(nodes: dict[Digest, graph.Node], roots: Iterable[Descriptor]) -> dict[Digest, int]:
    """digest -> the size a descriptor gives it (index entries, manifests' configs and layers, indexes' entries)."""
    sizes: dict[Digest, int] = {}
    for desc in [*roots, *(child for node in nodes.values() for child in node.children)]:
        sizes.setdefault(desc.digest, desc.size)
    return sizes


def _with_users(store: Layout, findings: list[blobs.Finding]) -> list[Damaged]:
    """Each finding with the tagged models that reach its blob, from a fresh look at the store: a blob found
    missing because ``rm`` removed it meanwhile, and now used by no model, is not damage."""
    if not findings:
        return []
    nodes = graph.scan(store.blobs_dir)
    users: dict[Digest, list[str]] = {}
    for name, desc in store.entries():
        for digest in graph.reachable(nodes, [desc]):
            users.setdefault(digest, []).append(name)
    return [
        Damaged(finding=f, path=store.blob_path(f.digest), models=tuple(users.get(f.digest, ())))
        for f in findings
        if f.problem != blobs.MISSING or users.get(f.digest)
    ]


def _repair(config: Config, store: Layout, report: Report, reporter: pull.Reporter) -> None:
    """Remove the damaged files, then pull each model that used one, pinned to its manifest."""
    for damaged in report.damaged:
        if blobs.discard(store, damaged.finding):
            report.removed.append(damaged.finding.digest)
    manifests = dict(store.entries())
    for name in _ordered(m for d in report.damaged for m in d.models):
        desc = manifests.get(name)
        if desc is None:  # untagged meanwhile: nothing left to restore
            continue
        try:
            pull.pull(config, [source_reference(name, desc.digest)], reporter)
        except ModelctlError as exc:
            report.incomplete.append(Incomplete(reference=name, error=str(exc), exit_code=exc.exit_code))
        else:
            report.restored.append(name)


def source_reference(name: str, manifest: Digest) -> Reference:
    """Where a stored model's bytes come from again: its name pinned to the manifest it has, so that a tag moved
    upstream does not change the model. A Hugging Face name takes no digest: its pull rebuilds the same manifest
    while the repository is unchanged."""
    ref = reference.parse(name)
    if ref.digest or ref.is_hugging_face:
        return ref
    return ref.with_digest(manifest)


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
