"""Pull speed, in one run on one machine: modelctl pull beside the machine's floor, curl, a minimal client and skopeo.

1. Fast link: a --size-mib model (default 2 GiB) in a local docker-registry. Interleaved rounds of: hashlib sha256 of
   the file from the page cache (the verification floor), `curl -o` of the blob (the receive-and-write floor),
   benchmarks/minimal_pull.py (the least a verifying Python client does), `modelctl pull` (adaptive streams,
   verified, into a fresh store; the stream count it settled on is read from its last progress line), `skopeo copy
   docker://... oci:...`. Medians of wall time, user and sys CPU. On two cores the sha256 and the receive+write run
   side by side, so a verifying download's floor is about max(sha256, curl).
2. Memory: modelctl's peak RSS pulling a --small-mib model and the --size-mib one (flat in the blob size).
3. Capped link: a local TCP proxy capping each connection at --throttle-mib MiB/s, as CDNs do, and a
   --throttled-size-mib model: curl, the minimal client, modelctl with 1 stream, with --parts streams fixed
   (MODELCTL_FIXED_PARTS=1), adaptive (MODELCTL_PARTS=--parts, the cap), skopeo. The blob transfer rate is modelctl's
   last progress line (first byte to last); the target is >= 0.8 x parts x cap.
4. Fixed overheads: `modelctl pull` of a model the store holds (one manifest request) and `pull --locked` of it (no
   request), medians of --overhead-rounds.

Usage: .venv/bin/python benchmarks/pull.py [--size-mib 2048] [--small-mib 256] [--rounds 5] [--throttle-mib 16]
       [--throttled-size-mib 256] [--throttled-rounds 2] [--parts 8] [--overhead-rounds 11]
       [--skip-fast] [--skip-throttled] [--skip-overheads]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    Registry,
    Run,
    ThrottlingProxy,
    compile_modelctl,
    docker_registry,
    make_blob,
    measured,
    median,
    push_model,
    rmtree,
    sha256_file,
)

MODELCTL = [sys.executable, "-m", "modelctl"]
MINIMAL = [sys.executable, str(Path(__file__).with_name("minimal_pull.py"))]
FINAL = re.compile(r"100\.0% \S+ \S+/\S+ \S+ ([0-9.]+) (KiB|MiB|GiB)/s(?: \((\d+) streams\))?\s*$", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--small-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--throttle-mib", type=float, default=16.0)
    parser.add_argument("--throttled-size-mib", type=int, default=256)
    parser.add_argument("--throttled-rounds", type=int, default=2)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--overhead-rounds", type=int, default=11)
    parser.add_argument("--skip-fast", action="store_true")
    parser.add_argument("--skip-throttled", action="store_true")
    parser.add_argument("--skip-overheads", action="store_true")
    args = parser.parse_args()
    print(f"load average at the start: {_load()}; {compile_modelctl()}\n")
    with tempfile.TemporaryDirectory(prefix="bench-pull-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        with docker_registry() as reg:
            big = _publish(reg, work, "big", args.size_mib)
            small = _publish(reg, work, "small", args.small_mib)
            if not args.skip_fast:
                _fast(args, work, reg, big, small)
            if not args.skip_throttled:
                _throttled(args, work, reg)
            if not args.skip_overheads:
                _overheads(args, work, reg)
    print(f"\nload average at the end: {_load()}")


@dataclass(frozen=True)
class _Model:
    path: Path
    digest: str
    repo: str

    def blob_path(self) -> str:
        return f"/v2/{self.repo}/blobs/{self.digest}"


def _publish(reg: Registry, work: Path, name: str, size_mib: int) -> _Model:
    blob = work / f"{name}.gguf"
    digest = make_blob(blob, size_mib << 20)
    push_model(reg.host, f"ai/{name}:1", blob, digest)
    return _Model(blob, digest, f"ai/{name}")


def _pull(host: str, model: _Model, home: Path, **env: str) -> Run:
    """``modelctl pull`` (progress lines on stderr, for the stream count and rate) into ``home``, then removed."""
    try:
        return measured([*MODELCTL, "pull", f"{host}/{model.repo}:1"], dict(os.environ, MODELCTL_HOME=str(home), **env))
    finally:
        rmtree(home)


def _streams(run: Run) -> int:
    found = FINAL.findall(run.stderr)
    if not found:
        raise SystemExit(f"no final progress line in: {run.stderr[-500:]}")
    return int(found[-1][2] or 1)


def _rate_mib(run: Run) -> float:
    value, unit, _ = FINAL.findall(run.stderr)[-1]
    return float(value) * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}[unit]


def _fast(args: argparse.Namespace, work: Path, reg: Registry, big: _Model, small: _Model) -> None:
    url = f"http://{reg.host}{big.blob_path()}"
    out = work / "out"
    floor: list[float] = []
    runs: dict[str, list[Run]] = {"curl": [], "minimal": [], "modelctl": [], "skopeo": [], "small": []}

    def once(key: str, run: Run) -> None:
        runs[key].append(run)
        out.unlink(missing_ok=True)

    for r in range(args.rounds):
        floor.append(sha256_file(big.path))
        once("curl", measured(["curl", "-sf", "-o", str(out), url]))
        once("minimal", measured([*MINIMAL, reg.host, big.blob_path(), str(out)]))
        once("modelctl", _pull(reg.host, big, work / f"home{r}"))
        dest = work / f"skopeo{r}"
        src = f"docker://{reg.host}/{big.repo}:1"
        once("skopeo", measured(["skopeo", "copy", "-q", "--src-tls-verify=false", src, f"oci:{dest}:x"]))
        rmtree(dest)
        once("small", _pull(reg.host, small, work / f"small{r}"))

    med = {k: median([x.seconds for x in v]) for k, v in runs.items()}
    sha = median(floor)
    limit = max(sha, med["curl"])
    gib = args.size_mib / 1024
    streams = [_streams(x) for x in runs["modelctl"]]
    print(f"## {args.size_mib} MiB model from a local docker-registry ({args.rounds} interleaved rounds, medians)\n")
    print("| what | seconds | GiB/s | user CPU s | sys CPU s | vs max(sha256, curl) |")
    print("|---|---|---|---|---|---|")
    label = "sha256 of the file (page cache): verification floor"
    print(f"| {label} | {sha:.2f} | {gib / sha:.2f} | | | {sha / limit:.2f}x |")
    for key, label in [
        ("curl", "curl -o (unverified): receive-and-write floor"),
        ("minimal", "minimal Python client: recv_into + pwrite + sha256 thread (benchmarks/minimal_pull.py)"),
        ("modelctl", f"modelctl pull (adaptive, cap {args.parts}; streams chosen: {_counts(streams)})"),
        ("skopeo", "skopeo copy docker:// -> oci:"),
    ]:
        user = median([x.user for x in runs[key]])
        system = median([x.sys for x in runs[key]])
        print(
            f"| {label} | {med[key]:.2f} | {gib / med[key]:.2f} | {user:.2f} | {system:.2f} | {med[key] / limit:.2f}x |"
        )
    print(
        f"\nmodelctl / minimal client: {med['modelctl'] / med['minimal']:.2f}x (target <= 1.1x); "
        f"modelctl / max(sha256 floor, curl -o): {med['modelctl'] / limit:.2f}x (target <= 1.35x); "
        f"modelctl / sha256 floor: {med['modelctl'] / sha:.2f}x; "
        f"skopeo / modelctl: {med['skopeo'] / med['modelctl']:.2f}x"
    )
    print(
        "\nEach round (seconds): "
        + "; ".join(
            f"{k} " + " ".join(f"{x.seconds:.2f}" for x in runs[k]) for k in ("curl", "minimal", "modelctl", "skopeo")
        )
        + "; sha256 "
        + " ".join(f"{x:.2f}" for x in floor)
    )

    rss_small = max(x.max_rss_mib for x in runs["small"])
    rss_big = max(x.max_rss_mib for x in runs["modelctl"])
    print(f"\n## Peak RSS of modelctl pull (the most over {args.rounds} rounds)\n")
    print("| blob | peak RSS, MiB | seconds (median) |")
    print("|---|---|---|")
    print(f"| {args.small_mib} MiB | {rss_small:.0f} | {med['small']:.2f} |")
    print(f"| {args.size_mib} MiB | {rss_big:.0f} | {med['modelctl']:.2f} |")
    print(
        f"\n{args.size_mib} MiB pull: {rss_big:.0f} MiB (target <= 120 MiB); {args.size_mib // args.small_mib}x the "
        f"blob, {rss_big - rss_small:+.0f} MiB"
    )


def _throttled(args: argparse.Namespace, work: Path, reg: Registry) -> None:
    """The same clients through a proxy capping each connection."""
    model = _publish(reg, work, "capped", args.throttled_size_mib)
    rate = args.throttle_mib * (1 << 20)
    parts = str(args.parts)
    small_parts = {"MODELCTL_PART_SIZE": str(1 << 20)}
    variants: dict[str, dict[str, str]] = {
        "1 stream": {"MODELCTL_PARTS": "1", **small_parts},
        f"{parts} streams, fixed": {"MODELCTL_PARTS": parts, "MODELCTL_FIXED_PARTS": "1", **small_parts},
        f"adaptive, cap {parts}": {"MODELCTL_PARTS": parts, **small_parts},
    }
    out = work / "out"
    seconds: dict[str, list[float]] = {k: [] for k in ("curl", "minimal", *variants, "skopeo")}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    chosen: list[int] = []
    with ThrottlingProxy(reg.host, rate) as proxy:
        for r in range(args.throttled_rounds):
            seconds["curl"].append(
                measured(["curl", "-sf", "-o", str(out), f"http://{proxy.host}{model.blob_path()}"]).seconds
            )
            out.unlink(missing_ok=True)
            seconds["minimal"].append(measured([*MINIMAL, proxy.host, model.blob_path(), str(out)]).seconds)
            out.unlink(missing_ok=True)
            for name, env in variants.items():
                run = _pull(proxy.host, model, work / f"capped{r}", **env)
                seconds[name].append(run.seconds)
                rates[name].append(_rate_mib(run))
                if name.startswith("adaptive"):
                    chosen.append(_streams(run))
            dest = work / f"skopeo-capped{r}"
            src = f"docker://{proxy.host}/{model.repo}:1"
            seconds["skopeo"].append(
                measured(["skopeo", "copy", "-q", "--src-tls-verify=false", src, f"oci:{dest}:x"]).seconds
            )
            rmtree(dest)
    mib = args.throttled_size_mib
    cap = args.throttle_mib
    print(
        f"\n## {mib} MiB through a proxy capping each connection at {cap:g} MiB/s "
        f"({args.throttled_rounds} rounds, medians)\n"
    )
    print("| what | command seconds | command MiB/s | blob transfer MiB/s (first byte to last) |")
    print("|---|---|---|---|")
    for name, label in [("curl", "curl -o"), ("minimal", "minimal Python client")]:
        print(f"| {label} | {median(seconds[name]):.2f} | {mib / median(seconds[name]):.1f} | |")
    for name in variants:
        label = f"modelctl pull, {name}" + (f" (chose {_counts(chosen)})" if name.startswith("adaptive") else "")
        print(
            f"| {label} | {median(seconds[name]):.2f} | {mib / median(seconds[name]):.1f} | {median(rates[name]):.1f} |"
        )
    print(f"| skopeo copy | {median(seconds['skopeo']):.2f} | {mib / median(seconds['skopeo']):.1f} | |")
    adaptive = median(rates[f"adaptive, cap {parts}"])
    print(
        f"\nadaptive: {adaptive:.1f} MiB/s = {adaptive / (args.parts * cap):.2f} x N x cap "
        f"(target >= 0.8, N = {parts}); {adaptive / median(rates['1 stream']):.2f}x one stream"
    )


def _overheads(args: argparse.Namespace, work: Path, reg: Registry) -> None:
    """Commands that find everything in the store: a tag (one manifest request) and a lockfile (no request)."""
    model = _publish(reg, work, "present", 16)
    home = work / "present-home"
    env = dict(os.environ, MODELCTL_HOME=str(home))
    lock = work / "models.lock"
    ref = f"{reg.host}/{model.repo}:1"
    measured([*MODELCTL, "pull", "-q", "--lock", str(lock), ref], env)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "modelctl pull REF (present)": [*MODELCTL, "pull", "-q", ref],
        "modelctl pull --locked FILE (present)": [*MODELCTL, "pull", "-q", "--locked", str(lock)],
    }
    runs: dict[str, list[Run]] = {k: [] for k in commands}
    for _ in range(args.overhead_rounds):
        for name, cmd in commands.items():
            runs[name].append(measured(cmd, env))
    rmtree(home)
    print(f"\n## A pull of what the store holds ({args.overhead_rounds} interleaved rounds, medians)\n")
    print("| command | seconds | user CPU s | sys CPU s | target |")
    print("|---|---|---|---|---|")
    targets = {"modelctl pull REF (present)": "<= 0.25 s", "modelctl pull --locked FILE (present)": "<= 0.2 s"}
    for name, values in runs.items():
        print(
            f"| `{name}` | {median([x.seconds for x in values]):.3f} | {median([x.user for x in values]):.3f} | "
            f"{median([x.sys for x in values]):.3f} | {targets.get(name, '')} |"
        )


def _counts(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
