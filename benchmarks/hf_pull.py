"""Hugging Face pull speed, in one run on one machine: modelctl pull hf.co/... vs curl vs the sha256 floor, and what a
pull costs before its first byte and when the model is present.

The Hub is tests/integration/hub_server.py (the endpoints the Hub serves, with the CDN redirect) on loopback,
serving one GGUF: the real SmolLM2 file followed by random bytes up to --size-mib (its header still parses, so
modelctl reads it as it reads any model). Interleaved rounds of: hashlib sha256 of the file from the page cache,
`curl -L -o` of the resolve URL, `modelctl pull hf.co/...` into a fresh MODELCTL_HOME (with the time from its start to
the Hub's first request for file bytes, and to the download's first request), then --present-rounds pulls of the
model once it is in the store (the listing, nothing else). Medians and ratios.

Usage: .venv/bin/python benchmarks/hf_pull.py [--size-mib 1024] [--rounds 3] [--present-rounds 11]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import compile_modelctl, median, rmtree, sha256_file, timed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from hub_server import HubRepo, HubServer, hub_server  # noqa: E402

SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
REPO, FILE = "bench/big-GGUF", "big-Q4_1.gguf"
DOWNLOAD_SPAN = 1 << 20
"""A ranged file request this long or longer is the download's; shorter ones are the fit check's header reads."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--present-rounds", type=int, default=11)
    args = parser.parse_args()
    print(f"load average at the start: {_load()}; {compile_modelctl()}\n")
    with tempfile.TemporaryDirectory(prefix="bench-hf-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        model = work / FILE
        shutil.copyfile(SMOLLM2, model)
        with model.open("ab") as f:
            block = os.urandom(1 << 20)
            while f.tell() < args.size_mib << 20:
                f.write(block[: min(len(block), (args.size_mib << 20) - f.tell())])
        with hub_server({REPO: HubRepo(files={FILE: model})}) as hub:
            stamps = _stamp_requests(hub)
            url = f"{hub.url}/{REPO}/resolve/main/{FILE}"
            times: dict[str, list[float]] = {"sha256": [], "curl": [], "modelctl": [], "first": [], "download": []}
            pull = [sys.executable, "-m", "modelctl", "pull", "-q", f"hf.co/{REPO}"]
            for r in range(args.rounds):
                times["sha256"].append(sha256_file(model))
                out = work / "curl.out"
                times["curl"].append(timed(["curl", "-sfL", "-o", str(out), url]))
                out.unlink()
                env = _env(work, hub, work / f"home{r}")
                stamps.clear()
                start = time.perf_counter()
                times["modelctl"].append(timed(pull, env))
                first = next(t for t, entry in stamps if _is_file(entry))
                download = next(t for t, entry in stamps if _is_file(entry) and _span(entry.range) >= DOWNLOAD_SPAN)
                times["first"].append(first - start)
                times["download"].append(download - start)
                if r < args.rounds - 1:
                    rmtree(work / f"home{r}")
            present_env = _env(work, hub, work / f"home{args.rounds - 1}")
            present = [timed(pull, present_env) for _ in range(args.present_rounds)]
    med = {k: median(v) for k, v in times.items()}
    print(f"## {args.size_mib} MiB GGUF from a local Hub ({args.rounds} rounds, medians)\n")
    print("| what | seconds | vs sha256 floor |")
    print("|---|---|---|")
    for k, label in [
        ("sha256", "sha256 of the file (page cache)"),
        ("curl", "curl -L -o (unverified)"),
        ("modelctl", "modelctl pull hf.co/... (verified against the Hub's sha256)"),
    ]:
        print(f"| {label} | {med[k]:.2f} | {med[k] / med['sha256']:.2f}x |")
    print(f"\nmodelctl / curl: {med['modelctl'] / med['curl']:.2f}x")
    rows = [
        ("start to the first request for file bytes (the listing done; the fit check's header read)", "first", ""),
        ("start to the download's first request (the listing and the fit check done)", "download", "<= 0.4 s"),
    ]
    print("\n| before and without a download | seconds (median) | target |")
    print("|---|---|---|")
    for label, key, target in rows:
        print(f"| {label} | {med[key]:.3f} | {target} |")
    label = f"`modelctl pull hf.co/...` of the present model ({args.present_rounds} runs)"
    print(f"| {label} | {median(present):.3f} | <= 0.4 s |")
    print(f"\nload average at the end: {_load()}")


def _env(work: Path, hub: HubServer, home: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        MODELCTL_HOME=str(home),
        HF_ENDPOINT=hub.url,
        HF_HOME=str(work / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    env.pop("HF_TOKEN", None)
    return env


def _stamp_requests(hub: HubServer) -> list[tuple[float, Any]]:
    """Record when each request reaches the Hub (``perf_counter``, this process's clock)."""
    stamps: list[tuple[float, Any]] = []
    log = hub._log

    def stamped(request: Any) -> Any:
        entry = log(request)
        stamps.append((time.perf_counter(), entry))
        return entry

    hub._log = stamped  # type: ignore[method-assign]
    return stamps


def _is_file(entry: Any) -> bool:
    return entry.method == "GET" and (entry.path.startswith("/cdn/") or "/resolve/" in entry.path)


def _span(range_header: str | None) -> int:
    if not range_header or "-" not in range_header:
        return 1 << 62
    first, _, last = range_header.removeprefix("bytes=").partition("-")
    return (int(last) - int(first) + 1) if last else 1 << 62


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
