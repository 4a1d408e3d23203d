"""Media types of the OCI/Docker manifests and of the model artifacts modelctl reads and writes."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

NONDISTRIBUTABLE = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
"""Layers whose blobs a registry need not hold (they live at the descriptor's ``urls``): never fetched, pushed
or required in the store."""

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_ACCEPT = (*MANIFESTS, *INDEXES)

# Docker Model Runner (docker/model-spec)
DOCKER_MODEL_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_MODEL_CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
DOCKER_MODEL_CONFIG_PRERELEASE = "application/vnd.docker.ai.model.config.v1+json"
DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3"
DOCKER_LICENSE = "application/vnd.docker.ai.license"
DOCKER_MMPROJ = "application/vnd.docker.ai.mmproj"
DOCKER_MMPROJ_OLD = "application/vnd.docker.ai.gguf.v3.mmproj"
DOCKER_CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
DOCKER_SAFETENSORS = "application/vnd.docker.ai.safetensors"
DOCKER_MODEL_FILE = "application/vnd.docker.ai.model.file"
DOCKER_DDUF = "application/vnd.docker.ai.dduf"
DOCKER_PRERELEASE_FILE = "application/vnd.docker.ai.model.file.v1+gguf"

# CNCF ModelPack (and its pre-rename vnd.cnai spelling)
MODELPACK_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_PREFIXES = ("application/vnd.cncf.model.", "application/vnd.cnai.model.")
MODELPACK_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MODELPACK_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
MODELPACK_DOC = "application/vnd.cncf.model.doc.v1.raw"

# Ollama
OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA_PREFIX = "application/vnd.ollama.image."
OLLAMA_MODEL = OLLAMA_PREFIX + "model"
OLLAMA_PROJECTOR = OLLAMA_PREFIX + "projector"
OLLAMA_TEMPLATE = OLLAMA_PREFIX + "template"
OLLAMA_LICENSE = OLLAMA_PREFIX + "license"
OLLAMA_PARAMS = OLLAMA_PREFIX + "params"
OLLAMA_SYSTEM = OLLAMA_PREFIX + "system"

# Annotations
REF_NAME = "org.opencontainers.image.ref.name"
FILEPATH = "org.cncf.model.filepath"
FILEPATH_CNAI = "org.cnai.model.filepath"
TITLE = "org.opencontainers.image.title"
FILE_METADATA = "org.cncf.model.file.metadata+json"
CREATED = "org.opencontainers.image.created"

# Model cards attached as referrers
MODEL_CARD_ARTIFACT = "application/vnd.modelctl.card.v1"
MODEL_CARD_LAYER = "text/markdown"
