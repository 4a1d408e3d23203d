"""save / load: move models to and from an offline machine as an OCI image layout archive (a tar).

The archive is the OCI image layout spec's own shape, as ``skopeo copy ... oci-archive:x.tar:<ref>`` writes it::

    oci-layout              {"imageLayoutVersion":"1.0.0"}
    index.json              one entry per saved reference (org.opencontainers.image.ref.name = full reference),
                            plus untagged entries for referrers (model cards) so that OCI tools see them
    blobs/sha256/<hex>      manifests, configs, layers and referrers
    blobs/sha512/<hex>      the same, for those named by a sha512 digest

Both directions walk the store's manifest graph (:mod:`modelctl.store.graph`): what a tag reaches is what
``save`` writes, what ``load`` keeps, and what ``rm`` and ``prune`` leave alone.
"""

from modelctl.services.archive.load import load, load_from_path
from modelctl.services.archive.result import ArchivedModel, ArchiveResult, Progress
from modelctl.services.archive.save import save, save_to_path

__all__ = ["ArchiveResult", "ArchivedModel", "Progress", "load", "load_from_path", "save", "save_to_path"]
