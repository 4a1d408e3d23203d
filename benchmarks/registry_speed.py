"""Our registry vs Debian's docker-registry (distribution 2.8), one run, same machine.

For each server: GET of a blob with curl (throughput), manifest GETs per second with 16 concurrent clients
(curl --parallel, a C client, so Python is not the bottleneck), and `modelctl push` of a model with that blob.
Usage: .venv/bin/python benchmarks/registry_speed.py [--size-mib 2048] [--requests 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import docker_registry, make_blob, median, our_registry, push_model, rmtree


def blob_get(host: str, digest: str, out: Path) -> float:
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    subprocess.run(["curl", "-sf", "-o", str(out), f"http://{host}/v2/ai/big/blobs/{digest}"], check=True)
    took = time.perf_counter() - start
    out.unlink()
    return took


def manifest_rate(host: str, requests: int, work: Path) -> float:
    urls = work / "urls.txt"
    accept = "Accept: application/vnd.oci.image.manifest.v1+json"
    urls.write_text(
        "".join(f'url = "http://{host}/v2/ai/big/manifests/2g"\noutput = "/dev/null"\n' for _ in range(requests))
    )
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-sSf", "--no-progress-meter", "-H", accept, "-Z", "--parallel-max", "16", "-K", str(urls)], check=True
    )
    return requests / (time.perf_counter() - start)


def push_time(src_home: Path, host: str) -> float:
    env = dict(os.environ, MODELCTL_HOME=str(src_home))
    tag = [sys.executable, "-m", "modelctl", "tag", "local/big:2g", f"{host}/ai/pushed:2g"]
    subprocess.run(tag, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    push = [sys.executable, "-m", "modelctl", "push", f"{host}/ai/pushed:2g"]
    subprocess.run(push, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        work = Path(tmp)
        blob = work / "model.gguf"
        digest = make_blob(blob, args.size_mib << 20)
        # a local store holding the model, the source of the push measurements
        src_home = work / "src"
        with docker_registry() as seed:
            push_model(seed.host, "ai/big:2g", blob, digest)
            env = dict(os.environ, MODELCTL_HOME=str(src_home))
            subprocess.run(
                [sys.executable, "-m", "modelctl", "pull", "-q", f"{seed.host}/ai/big:2g"], env=env, check=True
            )
            subprocess.run(
                [sys.executable, "-m", "modelctl", "tag", f"{seed.host}/ai/big:2g", "local/big:2g"], env=env, check=True
            )
        results: dict[str, dict[str, list[float]]] = {}
        with docker_registry() as theirs, our_registry(work / "ours") as ours:
            servers = {"docker-registry 2.8": theirs.host, "modelctl registry": ours.host}
            for label, host in servers.items():
                push_model(host, "ai/big:2g", blob, digest)
                results[label] = {"get": [], "manifests": [], "push": []}
            for _ in range(args.rounds):
                for label, host in servers.items():
                    r = results[label]
                    r["get"].append(blob_get(host, digest, work / "out"))
                    r["manifests"].append(manifest_rate(host, args.requests, work))
            for label, host in servers.items():  # one push each: the second would only skip existing blobs
                results[label]["push"].append(push_time(src_home, host))
        rmtree(src_home)
    gib = args.size_mib / 1024
    theirs_m = {k: median(v) for k, v in results["docker-registry 2.8"].items()}
    ours_m = {k: median(v) for k, v in results["modelctl registry"].items()}
    print(f"## Registry servers, {args.size_mib} MiB blob, {args.rounds} rounds (medians)\n")
    print("| measure | docker-registry 2.8 | modelctl registry | ratio (ours / theirs) | target |")
    print("|---|---|---|---|---|")
    print(
        f"| blob GET (curl), GiB/s | {gib / theirs_m['get']:.2f} | {gib / ours_m['get']:.2f} | "
        f"{theirs_m['get'] / ours_m['get']:.2f}x | >= 0.9x |"
    )
    print(
        f"| manifest GETs/s, 16 concurrent | {theirs_m['manifests']:.0f} | {ours_m['manifests']:.0f} | "
        f"{ours_m['manifests'] / theirs_m['manifests']:.2f}x | >= 0.5x |"
    )
    print(
        f"| `modelctl push`, GiB/s | {gib / theirs_m['push']:.2f} | {gib / ours_m['push']:.2f} | "
        f"{theirs_m['push'] / ours_m['push']:.2f}x | >= 0.8x |"
    )


if __name__ == "__main__":
    main()
