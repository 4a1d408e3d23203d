"""Pull speed, in one run on one machine: modelctl pull vs skopeo copy vs curl vs the sha256 floor.

1. A 2 GiB model in a local docker-registry. Interleaved rounds of: hashlib sha256 of the file from the page cache
   (verification floor), `curl -o` of the blob (unverified download floor), benchmarks/minimal_pull.py (the least
   a verifying Python client does), `modelctl pull` (verified, into the store), `skopeo copy docker://... oci:...`.
   Medians and ratios.
2. Per-connection throttling (a local TCP proxy capping each connection, as CDNs do): 1 part vs N parts.

Usage: .venv/bin/python benchmarks/pull.py [--size-mib 2048] [--rounds 3] [--throttle-mib 16] [--parts 8]
       [--throttled-only | --skip-throttled]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import (
    Registry,
    ThrottlingProxy,
    docker_registry,
    make_blob,
    median,
    push_model,
    rmtree,
    sha256_file,
    timed,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--throttle-mib", type=float, default=16.0)
    parser.add_argument("--throttled-size-mib", type=int, default=256)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--throttled-only", action="store_true", help="skip the 2 GiB comparison")
    parser.add_argument("--skip-throttled", action="store_true", help="only the 2 GiB comparison")
    args = parser.parse_args()
    modelctl = [sys.executable, "-m", "modelctl"]
    with tempfile.TemporaryDirectory(prefix="bench-pull-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        blob = work / "model.gguf"
        digest = make_blob(blob, args.size_mib << 20)
        with docker_registry() as reg:
            push_model(reg.host, "ai/big:2g", blob, digest)
            ref = f"{reg.host}/ai/big:2g"
            url = f"http://{reg.host}/v2/ai/big/blobs/{digest}"
            times: dict[str, list[float]] = {"sha256": [], "curl": [], "minimal": [], "modelctl": [], "skopeo": []}
            minimal = [sys.executable, str(Path(__file__).with_name("minimal_pull.py")), reg.host]
            for r in range(0 if args.throttled_only else args.rounds):
                times["sha256"].append(sha256_file(blob))
                out = work / "curl.out"
                times["curl"].append(timed(["curl", "-sf", "-o", str(out), url]))
                out.unlink()
                times["minimal"].append(timed([*minimal, f"/v2/ai/big/blobs/{digest}", str(out)]))
                out.unlink()
                home = work / f"home{r}"
                env = dict(os.environ, MODELCTL_HOME=str(home), MODELCTL_PARTS=str(args.parts))
                times["modelctl"].append(timed([*modelctl, "pull", "-q", ref], env))
                rmtree(home)
                dest = work / f"skopeo{r}"
                times["skopeo"].append(
                    timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:x"])
                )
                rmtree(dest)
            if args.throttled_only:
                return _throttled(args, work, reg, modelctl)
            med = {k: median(v) for k, v in times.items()}
            gib = args.size_mib / 1024
            print(f"## {args.size_mib} MiB model from a local docker-registry ({args.rounds} rounds, medians)\n")
            print("| what | seconds | GiB/s | vs sha256 floor |")
            print("|---|---|---|---|")
            for k, label in [
                ("sha256", "sha256 of the file (page cache): verification floor"),
                ("curl", "curl -o (unverified)"),
                ("minimal", "minimal Python client: recv_into + pwrite + sha256 thread (benchmarks/minimal_pull.py)"),
                ("modelctl", f"modelctl pull ({args.parts} parts, verified)"),
                ("skopeo", "skopeo copy docker:// -> oci:"),
            ]:
                print(f"| {label} | {med[k]:.2f} | {gib / med[k]:.2f} | {med[k] / med['sha256']:.2f}x |")
            print(
                f"\nmodelctl / sha256 floor: {med['modelctl'] / med['sha256']:.2f}x (target <= 1.6x); "
                f"skopeo / modelctl: {med['skopeo'] / med['modelctl']:.2f}x (target >= 3x); "
                f"modelctl / curl: {med['modelctl'] / med['curl']:.2f}x; "
                f"modelctl / minimal client: {med['modelctl'] / med['minimal']:.2f}x"
            )

            if not args.skip_throttled:
                _throttled(args, work, reg, modelctl)


def _throttled(args: argparse.Namespace, work: Path, reg: Registry, modelctl: list[str]) -> None:
    """N parts vs one stream through a proxy capping each connection."""
    small = work / "small.gguf"
    small_digest = make_blob(small, args.throttled_size_mib << 20)
    push_model(reg.host, "ai/small:t", small, small_digest)
    rate = args.throttle_mib * (1 << 20)
    with ThrottlingProxy(reg.host, rate) as proxy:
        res: dict[int, list[float]] = {1: [], args.parts: []}
        rates: dict[int, list[float]] = {1: [], args.parts: []}
        for r in range(2):
            for parts in (1, args.parts):
                home = work / f"t{parts}-{r}"
                env = dict(
                    os.environ,
                    MODELCTL_HOME=str(home),
                    MODELCTL_PARTS=str(parts),
                    MODELCTL_PART_SIZE=str(1 << 20),
                )
                seconds, mibs = _timed_with_rate([*modelctl, "pull", f"{proxy.host}/ai/small:t"], env)
                res[parts].append(seconds)
                rates[parts].append(mibs)
                rmtree(home)
    one, many = median(res[1]), median(res[args.parts])
    mib = args.throttled_size_mib
    print(f"\n## {mib} MiB through a proxy capping each connection at {args.throttle_mib:g} MiB/s\n")
    r1, rn = median(rates[1]), median(rates[args.parts])
    print("| parts | command seconds | command MiB/s | blob transfer MiB/s (first byte to last) |")
    print("|---|---|---|---|")
    print(f"| 1 | {one:.2f} | {mib / one:.1f} | {r1:.1f} |")
    print(f"| {args.parts} | {many:.2f} | {mib / many:.1f} | {rn:.1f} |")
    print(
        f"\nspeed-up with {args.parts} parts (target >= {0.8 * args.parts:.1f}x = 0.8 x N): "
        f"{one / many:.2f}x whole command, {rn / r1:.2f}x blob transfer throughput"
    )


def _timed_with_rate(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time of the whole command, and the blob's transfer rate (MiB/s) from modelctl's last progress line,
    which counts from the first byte received to the last (process start and manifest requests excluded)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    rates = re.findall(r"100\.0% \S+ \S+/\S+ \S+ ([0-9.]+) (KiB|MiB|GiB)/s", done.stderr)
    if not rates:
        raise SystemExit(f"no final progress line in: {done.stderr[-500:]}")
    value, unit = rates[-1]
    return seconds, float(value) * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}[unit]


if __name__ == "__main__":
    main()
