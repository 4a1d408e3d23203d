"""Questions answered by the registry without downloading weights: inspect --remote."""

from __future__ import annotations

import json
from typing import Any

from modelctl import reference
from modelctl.config import Config
from modelctl.services.models import describe


def inspect_remote(config: Config, text: str) -> dict[str, Any]:
    from modelctl.oci.client import RegistryClient
    from modelctl.services.pull import resolve_remote

    ref = reference.parse(text)
    if ref.is_hugging_face:
        from modelctl.services import huggingface

        return huggingface.inspect_remote(config, ref)
    with RegistryClient(config) as client:
        manifest, config_bytes, model = resolve_remote(client, ref)
    return describe(str(ref), manifest.digest, json.loads(manifest.raw), json.loads(config_bytes), model)
