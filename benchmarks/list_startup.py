"""`modelctl list` start-up with 20 models in the store: median wall time of the real command (lazy imports matter).

Also times `python -c pass` in the same run as the floor of any Python CLI, and reports the ratio.
Usage: .venv/bin/python benchmarks/list_startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import compile_modelctl

from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout


def populate(home: Path, count: int) -> None:
    store = Layout(home / "store")
    store.ensure()
    for i in range(count):
        layer = store.write_blob(b"GGUF" + os.urandom(64))
        config = json.dumps(
            {
                "config": {
                    "format": "gguf",
                    "quantization": "Q4_K_M",
                    "parameters": f"{i + 1}B",
                    "architecture": "llama",
                },
                "descriptor": {"created": "2025-06-01T00:00:00Z"},
                "rootfs": {"type": "rootfs", "diff_ids": [layer]},
            }
        ).encode()
        config_digest = store.write_blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": layer, "size": 68}],
            }
        ).encode()
        digest = store.write_blob(manifest)
        store.tag(
            f"docker.io/ai/model{i}:latest", Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(manifest))
        )


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(compile_modelctl())
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        populate(home, 20)
        env = dict(os.environ, MODELCTL_HOME=str(home))
        modelctl = [sys.executable, "-m", "modelctl", "list"]
        floor = [sys.executable, "-c", "pass"]
        timed(modelctl, env)
        ours, base = [], []
        for _ in range(args.rounds):
            ours.append(timed(modelctl, env))
            base.append(timed(floor, env))
    m, b = statistics.median(ours), statistics.median(base)
    print("| command | median wall (s) |")
    print("|---|---|")
    print(f"| `modelctl list` (20 models) | {m:.3f} |")
    print(f"| `python -c pass` | {b:.3f} |")
    print(
        f"\nratio list / bare interpreter: {m / b:.1f}x; target: list under 0.3 s -> {'met' if m < 0.3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
