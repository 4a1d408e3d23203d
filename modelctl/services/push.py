"""push: copy a local model to its registry: blobs first (skipped when present, mounted when another repository
of the same registry has them, chunked when large, several at once), the manifest last, so a registry never
holds a manifest whose blobs are missing. Ctrl-C or SIGTERM stops the uploads at once (see
:mod:`modelctl.services.parallel`); the blobs already on the registry are skipped by the next push."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelctl import reference
from modelctl.config import Config
from modelctl.digest import SHA256, Digest
from modelctl.errors import INTERRUPTS, DigestMismatch, IntegrityError, Interrupted
from modelctl.oci import descriptor
from modelctl.oci.client import RegistryClient
from modelctl.oci.descriptor import Descriptor, Manifest
from modelctl.reference import Reference
from modelctl.services import parallel
from modelctl.store import Layout
from modelctl.store import models as local
from modelctl.transfer import Progress, Stopped

CHUNKED_ABOVE = 256 << 20
CHUNK_SIZE = 64 << 20
PARALLEL_BLOBS = 3
READ_SIZE = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class PushResult:
    reference: str
    digest: Digest
    uploaded: int
    skipped: int
    mounted: int


def push(
    config: Config,
    text: str,
    *,
    target: str | None = None,
    on_blob: Callable[[Descriptor, str], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> PushResult:
    """Push local model ``text`` (to ``target`` when given, else to the registry its name says)."""

    store = local.layout(config)
    entry = local.resolve(store, text)
    ref = reference.parse(target) if target else reference.parse(entry.name)
    blobs = _unique(entry.manifest.blobs)  # a registry takes a manifest without its non-distributable blobs
    counts = {"uploaded": 0, "skipped": 0, "mounted": 0}
    there: dict[Digest, int] = {}
    """Blobs known to be on the registry (skipped, mounted or uploaded): what an interrupted push keeps."""
    lock = threading.Lock()
    stop = threading.Event()  # set by an interrupt: the uploads in flight end at their next piece
    manifest_pushed = False
    try:
        with RegistryClient(config) as client:

            def one(desc: Descriptor) -> None:
                if client.blob_exists(ref, desc.digest):
                    outcome = "skipped"
                elif _mounted(client, ref, desc.digest, _mount_sources(store, ref, desc.digest)):
                    outcome = "mounted"
                else:
                    chunk = CHUNK_SIZE if desc.size > CHUNKED_ABOVE else None
                    source = _reading(store.blob_path(desc.digest), desc, progress, stop)
                    try:
                        client.upload_blob(ref, desc.digest, desc.size, source, chunk_size=chunk)
                    except IntegrityError as exc:  # what was read from the store is not what its name says
                        why = "its content" if isinstance(exc, DigestMismatch) else "its size"
                        raise IntegrityError(
                            f"the local copy of blob {desc.digest} of {entry.name} is damaged ({why} does not match)",
                            hint=f"repair it with: modelctl verify --repair {entry.name}; then push again",
                        ) from None
                    outcome = "uploaded"
                with lock:
                    counts[outcome] += 1
                    there[desc.digest] = desc.size
                if on_blob:
                    on_blob(desc, outcome)

            parallel.each(one, blobs, workers=PARALLEL_BLOBS, stop=stop, grace=0.0)  # an upload saves nothing
            algorithm = entry.manifest.digest.algorithm  # a model pulled by a sha512 digest keeps that name
            digest = client.put_manifest(ref, entry.manifest.raw, entry.manifest.media_type, algorithm=algorithm)
            manifest_pushed = True
            for referrer in store.referrers(entry.manifest.digest):  # the model card travels with the model
                raw = store.read_blob(referrer.digest, max_size=4 << 20)
                attached = descriptor.parse(raw, referrer.media_type, algorithm=referrer.digest.algorithm)
                if isinstance(attached, Manifest):
                    parallel.each(one, _unique(attached.blobs), workers=PARALLEL_BLOBS, stop=stop, grace=0.0)
                    client.put_manifest(
                        Reference(ref.registry, ref.repository, None, referrer.digest), raw, referrer.media_type
                    )
    except INTERRUPTS as exc:
        raise Interrupted.by(exc, _kept_line(ref, blobs, there, lock, manifest_pushed)) from None
    return PushResult(reference=str(ref), digest=digest, **counts)


def _kept_line(
    ref: Reference, blobs: Sequence[Descriptor], there: dict[Digest, int], lock: threading.Lock, manifest: bool
) -> str:
    if manifest:
        return f"interrupted: {ref} was pushed, its model card was not; run the same command to finish"
    with lock:
        have = [b for b in blobs if b.digest in there]
    done, total = sum(b.size for b in have), sum(b.size for b in blobs)
    return (
        f"interrupted: {len(have)} of {len(blobs)} blobs ({done} of {total} bytes) are on {ref.registry}, "
        "no manifest was pushed; run the same command to push the rest"
    )


def _reading(
    path: Path, desc: Descriptor, progress: Callable[[Progress], None] | None, stop: threading.Event | None = None
) -> Iterator[bytes]:
    """The blob's bytes in 1 MiB pieces, reporting progress the way pull does (same renderers in the CLI); a set
    ``stop`` ends the upload (``transfer.Stopped``) at the next piece.

    Small pieces because httpcore copies whatever a ``send()`` leaves of a piece (1 MiB beat 8 MiB by ~5%)."""
    done = 0
    last = 0.0
    with path.open("rb") as f:
        while piece := f.read(READ_SIZE):
            if stop is not None and stop.is_set():
                raise Stopped()
            done += len(piece)
            now = time.monotonic()
            if progress and (now - last > 0.1 or done == desc.size):
                last = now
                progress(Progress(desc.digest, desc.size, done, done))
            yield piece


def _mounted(client: RegistryClient, ref: Reference, digest: Digest, sources: list[str]) -> bool:
    """Whether a cross-repository mount linked ``digest`` into ``ref``'s repository. A mount of a sha512 blob is
    checked with a HEAD: distribution 2.8 answers 201 to it yet links nothing (only sha256 mounts work there)."""
    if not any(client.mount_blob(ref, digest, repo) for repo in sources):
        return False
    return digest.algorithm == SHA256 or client.blob_exists(ref, digest)


def _mount_sources(store: Layout, ref: Reference, digest: Digest) -> list[str]:
    """Other repositories of the same registry that, per the local store, hold ``digest``."""
    out: list[str] = []
    for name, desc in store.entries():
        other = reference.parse(name)
        if other.registry != ref.registry or other.repository == ref.repository or other.repository in out:
            continue
        entry = local.load(store, name, desc)
        if digest in {blob.digest for blob in entry.manifest.blobs}:
            out.append(other.repository)
    return out


def _unique(layers: Sequence[Descriptor]) -> list[Descriptor]:
    seen: dict[Digest, Descriptor] = {}
    for layer in layers:
        seen.setdefault(layer.digest, layer)
    return list(seen.values())
