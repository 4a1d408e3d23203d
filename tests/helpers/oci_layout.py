"""An independent, minimal OCI image-layout writer, model-artifact builders for the three formats modelctl
pulls, and pushing a layout to a real registry with skopeo.

Independent on purpose: fixtures must not be built with the code under test (``modelctl.store``).

skopeo 1.9.3 notes (checked by :func:`push_layout`, which compares the registry's manifest digest with ours):
- ``--preserve-digests`` is supported and keeps the manifest bytes as written, for OCI manifests with model
  config/layer media types (Docker Model Runner v0.1, CNCF ModelPack with ``artifactType``).
- ``--insecure-policy`` is passed so that no ``/etc/containers/policy.json`` is needed.
- Docker schema 2 manifests with Ollama layers cannot go through skopeo at all: its ``oci:`` transport ignores
  index entries that are not OCI manifests/indexes ("no descriptor found for reference"), and from a ``dir:``
  copy it refuses the layers ("unsupported docker v2s2 media type: application/vnd.ollama.image.model").
  :func:`push_layout` pushes those over plain HTTP instead (monolithic uploads, :func:`http_push_layout`);
  the returned :class:`Pushed` says which way (``via``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers.servers import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
FILEPATH = "org.cncf.model.filepath"

DOCKER_MODEL_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3"
DOCKER_LICENSE = "application/vnd.docker.ai.license"
MODELPACK_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MODELPACK_DOC = "application/vnd.cncf.model.doc.v1.raw"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"
OLLAMA_LICENSE = "application/vnd.ollama.image.license"
CREATED = "2025-01-01T00:00:00Z"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class OCILayout:
    """An OCI image layout on disk: ``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if not (root / "index.json").exists():
            self._write_index([])

    def add_bytes(
        self, data: bytes, media_type: str, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Store ``data`` as a blob; return its descriptor (JSON form)."""
        digest = digest_of(data)
        (self.blobs / digest[7:]).write_bytes(data)
        return _descriptor(media_type, digest, len(data), annotations)

    def add_file(
        self,
        path: Path,
        media_type: str,
        annotations: dict[str, str] | None = None,
        *,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """Store a file as a blob (hard-linked when possible); a known ``digest`` skips hashing."""
        if digest is None:
            sha = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(4 << 20):
                    sha.update(block)
            digest = f"sha256:{sha.hexdigest()}"
        target = self.blobs / digest[7:]
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        return _descriptor(media_type, digest, path.stat().st_size, annotations)

    def add_manifest(self, doc: dict[str, Any], tag: str) -> str:
        """Store a manifest (exact bytes: compact JSON), name it ``tag`` in index.json; return its digest."""
        data = json.dumps(doc, separators=(",", ":")).encode()
        desc = self.add_bytes(data, doc["mediaType"], {REF_NAME: tag})
        index = [m for m in self._index()["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
        self._write_index([*index, desc])
        return str(desc["digest"])

    def manifest_bytes(self, tag: str) -> bytes:
        return self.blob(self.manifest_descriptor(tag)["digest"])

    def manifest_descriptor(self, tag: str) -> dict[str, Any]:
        for desc in self._index()["manifests"]:
            if desc.get("annotations", {}).get(REF_NAME) == tag:
                return dict(desc)
        raise KeyError(f"no manifest tagged {tag!r} in {self.root}")

    def blob(self, digest: str) -> bytes:
        return (self.blobs / digest.removeprefix("sha256:")).read_bytes()

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def _index(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.root / "index.json").read_text())
        return doc

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        (self.root / "index.json").write_text(json.dumps(doc, indent=1))


def _descriptor(
    media_type: str, digest: str, size: int, annotations: dict[str, str] | None
) -> dict[str, Any]:
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        desc["annotations"] = dict(annotations)
    return desc


def _human_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


# -- model artifacts ---------------------------------------------------------------------------------------


def docker_v01_artifact(
    layout: OCILayout,
    tag: str,
    gguf_files: list[Path],
    *,
    license: bytes | None = None,
    context_size: int | None = None,
    quantization: str = "Q4_1",
    parameters: str = "135M",
    architecture: str = "llama",
    gguf_metadata: dict[str, str] | None = None,
    annotate_filepaths: bool = False,
    digests: dict[Path, str] | None = None,
) -> str:
    """A Docker Model Runner v0.1 artifact (what Docker Hub's ``ai/`` serves): an OCI manifest without
    artifactType, config ``...model.config.v0.1+json``, the GGUF shards as ``...gguf.v3`` layers in shard
    order, then the license. Returns the manifest digest. ``digests``: known file digests (skips hashing)."""
    layers = []
    for path in gguf_files:
        notes = {FILEPATH: path.name} if annotate_filepaths else None
        layers.append(layout.add_file(path, DOCKER_GGUF, notes, digest=(digests or {}).get(path)))
    if license is not None:
        layers.append(
            layout.add_bytes(license, DOCKER_LICENSE, {FILEPATH: "LICENSE"} if annotate_filepaths else None)
        )
    config: dict[str, Any] = {
        "format": "gguf",
        "quantization": quantization,
        "parameters": parameters,
        "architecture": architecture,
        "size": _human_size(sum(p.stat().st_size for p in gguf_files)),
        "gguf": gguf_metadata if gguf_metadata is not None else {"general.architecture": architecture},
    }
    if context_size is not None:
        config["context_size"] = context_size
    config_doc = {
        "config": config,
        "descriptor": {"created": CREATED},
        "rootfs": {"type": "rootfs", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_desc = layout.add_bytes(json.dumps(config_doc).encode(), DOCKER_MODEL_CONFIG_V01)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers}
    return layout.add_manifest(manifest, tag)


def modelpack_artifact(
    layout: OCILayout,
    tag: str,
    weights: list[Path],
    *,
    license: bytes | None = None,
    name: str = "tiny-llama",
    family: str = "llama",
    param_size: str = "135M",
    quantization: str = "Q4_1",
    architecture: str = "llama",
) -> str:
    """A CNCF ModelPack artifact: artifactType ``...model.manifest.v1+json``, camelCase config, weight layers
    ``...weight.v1.raw`` with ``org.cncf.model.filepath``, the license as a doc layer. Returns the digest."""
    layers = [layout.add_file(path, MODELPACK_WEIGHT, {FILEPATH: path.name}) for path in weights]
    if license is not None:
        layers.append(layout.add_bytes(license, MODELPACK_DOC, {FILEPATH: "LICENSE"}))
    config_doc = {
        "descriptor": {"createdAt": CREATED, "name": name, "family": family},
        "config": {
            "architecture": architecture,
            "format": "gguf",
            "paramSize": param_size,
            "precision": "int4",
            "quantization": quantization,
        },
        "modelfs": {"type": "layers", "diffIds": [layer["digest"] for layer in layers]},
    }
    config_desc = layout.add_bytes(json.dumps(config_doc).encode(), MODELPACK_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODELPACK_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }
    return layout.add_manifest(manifest, tag)


def ollama_artifact(
    layout: OCILayout,
    tag: str,
    gguf: Path,
    *,
    template: str = "{{ .System }}{{ .Prompt }}",
    params: dict[str, Any] | None = None,
    license: bytes | None = None,
    model_family: str = "llama",
    model_type: str = "135M",
    file_type: str = "Q4_1",
) -> str:
    """An Ollama-registry model: Docker schema 2 manifest, ``container.image.v1+json`` config holding model
    fields, layers model (the GGUF), template (a Go template), params (JSON), license. Returns the digest."""
    layers = [layout.add_file(gguf, OLLAMA_MODEL), layout.add_bytes(template.encode(), OLLAMA_TEMPLATE)]
    layers.append(layout.add_bytes(json.dumps(params or {"stop": ["<|im_end|>"]}).encode(), OLLAMA_PARAMS))
    if license is not None:
        layers.append(layout.add_bytes(license, OLLAMA_LICENSE))
    config_doc = {
        "model_format": "gguf",
        "model_family": model_family,
        "model_families": [model_family],
        "model_type": model_type,
        "file_type": file_type,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_desc = layout.add_bytes(json.dumps(config_doc).encode(), DOCKER_IMAGE_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_V2, "config": config_desc, "layers": layers}
    return layout.add_manifest(manifest, tag)


# -- pushing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    reference: str
    """``HOST:PORT/repo:tag`` as pushed."""
    digest: str
    via: str
    """``skopeo`` or ``http`` (see the module docstring)."""


def push_layout(layout: OCILayout, tag_in_layout: str, registry: RegistryServer, repo_and_tag: str) -> Pushed:
    """Copy the manifest ``tag_in_layout`` (and its blobs) to ``registry`` as ``repo_and_tag``, byte for byte.

    OCI manifests go through real skopeo (``copy --preserve-digests``); Docker schema 2 manifests over plain
    HTTP (skopeo's ``oci:`` transport reads OCI manifests only). Fails unless the registry then serves the
    exact manifest bytes of the layout."""
    desc = layout.manifest_descriptor(tag_in_layout)
    target = f"{registry.host}/{repo_and_tag}"
    if desc["mediaType"] == OCI_MANIFEST:
        cmd = [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            *(["--dest-creds", f"{registry.username}:{registry.password}"] if registry.username else []),
            f"oci:{layout.root}:{tag_in_layout}",
            f"docker://{target}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"skopeo copy to {target} failed: {result.stderr.strip()}")
        via = "skopeo"
    else:
        http_push_layout(layout, tag_in_layout, registry, repo_and_tag)
        via = "http"
    served = inspect_raw(registry, repo_and_tag)
    if digest_of(served) != desc["digest"]:
        raise AssertionError(
            f"{target} serves manifest {digest_of(served)}, not the {desc['digest']} that was pushed "
            f"(the push rewrote the manifest)"
        )
    return Pushed(target, desc["digest"], via)


def inspect_raw(registry: RegistryServer, repo_and_tag: str) -> bytes:
    """The manifest bytes the registry serves, read with skopeo (an independent client)."""
    cmd = [
        "skopeo",
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
        *(["--creds", f"{registry.username}:{registry.password}"] if registry.username else []),
        f"docker://{registry.host}/{repo_and_tag}",
    ]
    result = subprocess.run(cmd, capture_output=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(
            f"skopeo inspect {registry.host}/{repo_and_tag} failed: {result.stderr.decode().strip()}"
        )
    return result.stdout


def http_push_layout(
    layout: OCILayout, tag_in_layout: str, registry: RegistryServer, repo_and_tag: str
) -> str:
    """Push over plain HTTP with httpx: each blob as one monolithic upload (POST, PUT ?digest=), then the
    manifest. Speaks Basic and Bearer (token realm) auth with the registry's credentials; returns the
    digest."""
    repo, _, tag = repo_and_tag.rpartition(":")
    desc = layout.manifest_descriptor(tag_in_layout)
    manifest = layout.blob(desc["digest"])
    doc = json.loads(manifest)
    with httpx.Client(base_url=registry.url, timeout=300, auth=_RegistryAuth(registry, repo)) as client:
        for blob in [doc["config"], *doc["layers"]]:
            if client.head(f"/v2/{repo}/blobs/{blob['digest']}").status_code == 200:
                continue
            start = client.post(f"/v2/{repo}/blobs/uploads/")
            if start.status_code != 202:
                raise AssertionError(
                    f"upload to {registry.host}/{repo} refused: {start.status_code} {start.text}"
                )
            url = httpx.URL(start.headers["Location"])
            url = registry_url(registry, url).copy_merge_params({"digest": blob["digest"]})
            with layout.blob_path(blob["digest"]).open("rb") as f:
                done = client.put(
                    url,
                    content=f.read(),
                    headers={"Content-Type": "application/octet-stream"},
                )
            if done.status_code != 201:
                raise AssertionError(f"upload of {blob['digest']} failed: {done.status_code} {done.text}")
        put = client.put(
            f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": desc["mediaType"]}
        )
        if put.status_code != 201:
            raise AssertionError(
                f"manifest PUT to {registry.host}/{repo_and_tag} failed: {put.status_code} {put.text}"
            )
    return str(desc["digest"])


def registry_url(registry: RegistryServer, url: httpx.URL) -> httpx.URL:
    """A Location made absolute against the registry."""
    return httpx.URL(registry.url).join(url) if not url.is_absolute_url else url


class _RegistryAuth(httpx.Auth):
    """Enough of the registry auth dance for a test pusher: Basic, or a Bearer token for ``pull,push``."""

    def __init__(self, registry: RegistryServer, repo: str) -> None:
        self.registry = registry
        self.repo = repo
        self.header: str | None = None

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        if self.header:
            request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code != 401 or not self.registry.username:
            return
        challenge = response.headers.get("WWW-Authenticate", "")
        basic = base64.b64encode(f"{self.registry.username}:{self.registry.password}".encode()).decode()
        if challenge.lower().startswith("basic"):
            self.header = f"Basic {basic}"
        else:
            params = dict(part.split("=", 1) for part in challenge.split(" ", 1)[1].split(","))
            params = {k.strip(): v.strip().strip('"') for k, v in params.items()}
            token = httpx.get(
                params["realm"],
                params={"service": params.get("service", ""), "scope": f"repository:{self.repo}:pull,push"},
                headers={"Authorization": f"Basic {basic}"},
                timeout=30,
            )
            token.raise_for_status()
            body = token.json()
            self.header = f"Bearer {body.get('token') or body['access_token']}"
        request.headers["Authorization"] = self.header
        yield request


TINY_MODEL_CONFIG = json.dumps(
    {"config": {"format": "gguf", "quantization": "F32", "parameters": "1M", "architecture": "llama"}}
).encode()
"""The Docker v0.1 model config of a tiny test model."""


def model_manifest(config_digest: str, config_size: int, layer_digest: str, layer_size: int) -> bytes:
    """A Docker v0.1 model manifest (one GGUF layer) naming blobs by any digest the caller computed."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [{"mediaType": "application/vnd.docker.ai.gguf.v3", "digest": layer_digest, "size": layer_size}],
        }
    ).encode()
