"""Hugging Face pull speed, in one run on one machine: modelctl pull hf.co/... vs curl vs the sha256 floor.

The Hub is tests/integration/hub_server.py (the endpoints huggingface_hub uses, with the CDN redirect) on loopback,
serving one GGUF: the real SmolLM2 file followed by random bytes up to --size-mib (its header still parses, so
modelctl reads it as it reads any model). Interleaved rounds of: hashlib sha256 of the file from the page cache,
`curl -L -o` of the resolve URL, `modelctl pull hf.co/...` into a fresh MODELCTL_HOME. Medians and ratios.

Usage: .venv/bin/python benchmarks/hf_pull.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import median, rmtree, sha256_file, timed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from hub_server import HubRepo, hub_server  # noqa: E402

SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
REPO, FILE = "bench/big-GGUF", "big-Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hf-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        model = work / FILE
        shutil.copyfile(SMOLLM2, model)
        with model.open("ab") as f:
            block = os.urandom(1 << 20)
            while f.tell() < args.size_mib << 20:
                f.write(block[: min(len(block), (args.size_mib << 20) - f.tell())])
        with hub_server({REPO: HubRepo(files={FILE: model})}) as hub:
            url = f"{hub.url}/{REPO}/resolve/main/{FILE}"
            times: dict[str, list[float]] = {"sha256": [], "curl": [], "modelctl": []}
            for r in range(args.rounds):
                times["sha256"].append(sha256_file(model))
                out = work / "curl.out"
                times["curl"].append(timed(["curl", "-sfL", "-o", str(out), url]))
                out.unlink()
                home = work / f"home{r}"
                env = dict(
                    os.environ,
                    MODELCTL_HOME=str(home),
                    HF_ENDPOINT=hub.url,
                    HF_HOME=str(work / "hf-home"),
                    HF_HUB_DISABLE_TELEMETRY="1",
                )
                env.pop("HF_TOKEN", None)
                times["modelctl"].append(timed([sys.executable, "-m", "modelctl", "pull", "-q", f"hf.co/{REPO}"], env))
                rmtree(home)
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


if __name__ == "__main__":
    main()
