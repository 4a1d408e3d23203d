"""The references a loaded archive's models get: index.json's ``org.opencontainers.image.ref.name``, or ``--name``.

A ref.name is either a full reference (``modelctl save`` writes ``docker.io/ai/smollm2:135M-Q4_1``, skopeo writes
what ``oci-archive:FILE:NAME:TAG`` says) or a tag alone, as the OCI image layout intends and
``skopeo copy ... oci-archive:FILE:TAG`` writes. A tag alone names no repository, so modelctl does not guess one
(it once read ``v1`` as ``docker.io/ai/v1:latest``): the user says it with ``load --name REPOSITORY``, and every
entry keeps its tag under it. ``--name REPOSITORY:TAG`` names the archive's one model; an archive whose index
names nothing (``skopeo copy ... oci-archive:FILE``) loads its one model under ``--name``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from modelctl import reference
from modelctl.digest import Digest
from modelctl.errors import IntegrityError, ModelctlError, UsageError, shown
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.reference import Reference

Listed = Sequence[tuple[str | None, Descriptor]]
"""index.json's entries: (the ref.name annotation as written, or None; the manifest's descriptor)."""

_NOTHING = "nothing was loaded"


@dataclass(frozen=True, slots=True)
class Target:
    """What ``--name`` says: a repository (``tagged`` False: each entry keeps its own tag) or one reference."""

    ref: Reference
    tagged: bool


def target(text: str) -> Target:
    """Parse ``--name``: REPOSITORY or REPOSITORY:TAG (InvalidReference or UsageError, exit 2)."""
    ref = reference.parse(text)
    if ref.digest is not None:
        raise UsageError(f"--name {text}: a name cannot pin a digest", hint="give REPOSITORY or REPOSITORY:TAG")
    return Target(ref, tagged=":" in text.rsplit("/", 1)[-1])


def tag_only(name: str) -> bool:
    """Whether a ref.name is a tag without a repository (``v1``), rather than a reference (``ai/x:v1``)."""
    return not any(c in name for c in "/:@")


def assign(listed: Listed, archive: str, chosen: Target | None, referrers: Collection[Digest]) -> Listed:
    """(full reference, descriptor) for every entry that is to be tagged, None for the others (loaded only as
    referrers of a tagged model). ``referrers``: manifests of the archive attached to another (model cards), which
    an unnamed archive's model cannot be. UsageError (exit 2) when the names need ``--name`` or contradict it."""
    named = [(name, desc) for name, desc in listed if name is not None]
    if chosen is None:
        full = [(_full(name, archive) if name is not None else None, desc) for name, desc in listed]
        bare = next((name for name, _ in named if tag_only(name)), None)
        if bare is not None:
            raise UsageError(
                f"{archive} names its model only by the tag {bare!r} (as skopeo's oci-archive:FILE:TAG writes)",
                hint=f"say which repository it is: modelctl load --name REPOSITORY (the tag stays {bare}); {_NOTHING}",
            )
        if not named:
            raise UsageError(
                f"{archive}: index.json names no model (no {mt.REF_NAME} annotation)",
                hint=f"name it: modelctl load --name REPOSITORY:TAG; {_NOTHING}",
            )
        return full
    if not named:
        models = [desc for _, desc in listed if desc.digest not in referrers]
        if len(models) != 1:
            raise UsageError(
                f"{archive} names none of its {len(models)} models, so --name cannot tell which it names",
                hint=f"write the archive with a name per model (skopeo copy ... oci-archive:FILE:NAME:TAG); {_NOTHING}",
            )
        return [(str(chosen.ref) if desc is models[0] else None, desc) for _, desc in listed]
    if chosen.tagged:
        if len(named) != 1:
            raise UsageError(
                f"{archive} holds {len(named)} tagged models; --name {chosen.ref.short} names one",
                hint=f"give --name a repository without a tag: each model keeps its own tag under it; {_NOTHING}",
            )
        return [(str(chosen.ref) if name is not None else None, desc) for name, desc in listed]
    return [(_under(chosen.ref, name, archive) if name is not None else None, desc) for name, desc in listed]


def _full(name: str, archive: str) -> str:
    try:
        return str(reference.parse(name))
    except ModelctlError:
        raise IntegrityError(f"{archive}: index.json names an invalid reference {shown(name)}", hint=_NOTHING) from None


def _under(repository: Reference, name: str, archive: str) -> str:
    """``name``'s tag (the tag-only name itself, or a full reference's tag or digest) under ``repository``."""
    try:
        if tag_only(name):
            return str(repository.with_tag(name))
        own = reference.parse(name)
    except ModelctlError:
        raise IntegrityError(f"{archive}: index.json names an invalid tag {shown(name)}", hint=_NOTHING) from None
    return str(Reference(repository.registry, repository.repository, own.tag, own.digest))
