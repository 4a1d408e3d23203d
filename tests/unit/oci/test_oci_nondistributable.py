"""Non-distributable layers in the content model: ``urls`` parse and round-trip, and such a layer is left out of
the blobs a manifest needs (what a pull fetches, a push uploads and the store's walk requires)."""

from __future__ import annotations

import json

import pytest

from modelctl import artifact
from modelctl.digest import of_bytes
from modelctl.errors import IntegrityError
from modelctl.oci import descriptor
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor, Manifest

FOREIGN = mt.NONDISTRIBUTABLE[1]
URL = "https://weights.example.invalid/x.tar.gz"


@pytest.mark.parametrize("urls", [[], [URL], [URL, "http://mirror.example.invalid/x"]])
def test_urls_round_trip(urls: list[str]) -> None:
    obj = {"mediaType": FOREIGN, "digest": str(of_bytes(b"x")), "size": 1, **({"urls": urls} if urls else {})}
    desc = Descriptor.from_json(obj)
    assert desc.urls == tuple(urls)
    assert not desc.distributable
    assert desc.to_json() == obj


@pytest.mark.parametrize("urls", ["https://x", [1], {"a": "b"}])
def test_malformed_urls_are_an_integrity_error(urls: object) -> None:
    with pytest.raises(IntegrityError, match="urls"):
        Descriptor.from_json({"mediaType": FOREIGN, "digest": str(of_bytes(b"x")), "size": 1, "urls": urls})


def _manifest(*layers: dict[str, object]) -> Manifest:
    config = b"{}"
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": str(of_bytes(config)), "size": 2},
            "layers": list(layers),
        }
    ).encode()
    doc = descriptor.parse(raw)
    assert isinstance(doc, Manifest)
    return doc


def test_a_foreign_layer_is_not_among_the_blobs_and_not_in_the_size() -> None:
    gguf = {"mediaType": mt.DOCKER_GGUF, "digest": str(of_bytes(b"gguf")), "size": 4}
    foreign = {"mediaType": FOREIGN, "digest": str(of_bytes(b"far")), "size": 1000, "urls": [URL]}
    manifest = _manifest(gguf, foreign)
    assert [b.media_type for b in manifest.blobs] == [mt.DOCKER_MODEL_CONFIG_V01, mt.DOCKER_GGUF]
    model = artifact.from_manifest(manifest, b"{}")
    assert [d.media_type for d in model.gguf] == [mt.DOCKER_GGUF]
    assert [d.urls for d in model.foreign] == [(URL,)]
    assert model.size == 4
