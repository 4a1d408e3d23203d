"""``Layout``: the local store as one object, an OCI image layout under ``$MODELCTL_HOME/store``.

Why an OCI layout rather than a private format: other tools read it as it is. ``skopeo inspect --raw
oci:$MODELCTL_HOME/store:docker.io/ai/smollm2:135M-Q4_1`` prints a model's manifest, ``skopeo copy`` exports
it, and a layout copied to an offline machine is a valid store there. The spec fixes the shape::

    oci-layout              {"imageLayoutVersion":"1.0.0"}
    index.json              one entry per tag; annotation org.opencontainers.image.ref.name = full reference
    blobs/sha256/<hex>      content, named by its digest; a file here was complete and correct when it arrived
    blobs/sha512/<hex>      the same, for content a manifest (or a reference) names by a sha512 digest
    .lock  .tmp/            ours (dotfiles, ignored by OCI tools): the cross-process lock, temp files
    .unflushed.json         ours: blobs committed without an fsync of their data (see modelctl.store.journal)
    .refs.db                ours: what each blob is and what points at it (SQLite, see modelctl.store.refs), so
                            that removing a model walks up from its blobs instead of reading the whole graph;
                            a cache, rebuilt when missing

Invariants: a blob enters ``blobs/`` only by an atomic rename after its digest was verified. One committed without
a flush (``commit_blob(..., flush=False)``, a pull's layers) is listed in ``.unflushed.json`` with the boot id
before the rename, and stays listed until it is known to be on disk (fsynced once it has settled, or re-verified);
after a reboot (a kernel crash or power loss may have lost its page-cache bytes) :meth:`Layout.recover_unflushed`
re-hashes it and deletes it if damaged, so ``blobs/`` may then lack a blob a tag needs (``pull`` fetches it again,
``run`` reports it missing). Every other blob is fsynced before its rename. ``index.json``
is rewritten atomically (temp file, fsync, rename) under the lock, so readers never see a torn index and
concurrent writers never lose an entry; a tag never points at a manifest whose config or layers are missing.
Removing a tag deletes only the blobs that no other tag needs; blobs nothing references (a pull killed before
it tagged) stay until :meth:`Layout.prune`, because a concurrent pull commits its layers before it tags.

The concepts live in their own modules: ``blobs``, ``index`` (tags), ``gc``, ``journal`` (unflushed blobs) and
``graph`` (what a manifest reaches); ``Layout`` puts them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from modelctl.digest import Digest
from modelctl.oci import descriptor
from modelctl.oci.descriptor import Descriptor
from modelctl.store import graph
from modelctl.store.directory import stored
from modelctl.store.gc import Collector


class Layout(Collector):
    """An OCI image layout used as modelctl's content-addressed model store."""

    def referrers(self, digest: Digest) -> list[Descriptor]:
        """Stored manifests whose ``subject`` is ``digest`` (e.g. a model card attached by ``package --card``)."""
        digest = stored(digest)
        with self.refs() as refs:
            refs.sync()
            return refs.attached(digest)

    def children(self, desc: Descriptor) -> Sequence[Descriptor]:
        """What a stored manifest or index points at, read verified; nothing for a config or a layer."""
        if desc.media_type not in graph.DOCUMENTS:
            return ()
        data = self.read_blob(desc.digest, max_size=graph.MAX_MANIFEST)
        return graph.children(descriptor.parse(data, desc.media_type))

    def walk(self, roots: Iterable[Descriptor]) -> Iterator[graph.Step]:
        """Every stored blob the roots reach (documents first), then what is attached to them (model cards)."""
        with self.refs() as refs:
            refs.sync()
            yield from graph.walk(roots, self.children, refs.attached)
