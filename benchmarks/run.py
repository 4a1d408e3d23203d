"""``modelctl run`` one-shot against a plain llama-cpp-python script with identical settings, in one run; then
the extra CPU weight buffers (``MODELCTL_CPU_BUFFERS`` auto / none / all) against each other.

Both are separate processes that load SmolLM2-135M-Instruct (Q4_1) with the same context, batch, threads,
messages, seed and greedy sampling, stream the answer to stdout and report their own timing on stderr,
measured the same way: time to first token from the chat-completion request to the first streamed text, and
generation speed as tokens decoded after the first one (llama.cpp's perf counter) over the time after it.
The harness also times each process from its start to the first byte of the answer on stdout.
Rounds are interleaved (the order alternates) because this machine's two cores are shared and noisy;
the verdict is the median of the per-round ratios.

The first table is the cost of the runtime's worker process: ``modelctl run`` loads the model in a child and
streams tokens back over a socket, the plain script runs llama-cpp-python in its own process (with the same
buffer choice, so only the process boundary and the CLI differ). The second runs ``modelctl run`` with each
``MODELCTL_CPU_BUFFERS`` setting on SmolLM2 Q4_1 and on a Q4_0 copy of it (requantised here with llama.cpp's
own quantiser, so that CPU_REPACK has matrices to take); a setting that crashes is reported as such.

    .venv/bin/python benchmarks/run.py [--rounds 7] [--max-tokens 200] [--ctx-size 2048] [--threads 2]
                                       [--only worker|buffers]

Prints a Markdown table and writes it to docs/run_benchmark.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelctl.oci import mediatypes as mt  # noqa: E402
from modelctl.oci.descriptor import Descriptor  # noqa: E402
from modelctl.store import Layout  # noqa: E402

MODEL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
REF = "ai/smollm2:135M-Q4_1"
REF_Q4_0 = "ai/smollm2:135M-Q4_0"
SETTINGS = ("auto", "none", "all")
PROMPT = "Write a short story about a robot who learns to paint."
SEED = 42
OUT = ROOT / "docs" / "run_benchmark.md"

PLAIN = r"""
import json, sys, time
import llama_cpp

from pathlib import Path
from modelctl import cpu
from modelctl.runtime.buffers import applied

path, n_ctx, threads, max_tokens, seed, prompt = sys.argv[1:7]
with applied(cpu.weight_buffers("auto", cpu.features()), [Path(path)]):  # what modelctl run loads with
    llm = llama_cpp.Llama(model_path=path, n_ctx=int(n_ctx), n_batch=512, n_ubatch=512, n_gpu_layers=0,
                          n_threads=int(threads), n_threads_batch=int(threads), verbose=False)
llama_cpp.llama_perf_context_reset(llm.ctx)
started = time.perf_counter()
first = None
for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], temperature=0.0,
                                        top_p=0.95, top_k=40, seed=int(seed), max_tokens=int(max_tokens),
                                        stream=True):
    piece = chunk["choices"][0]["delta"].get("content")
    if piece:
        if first is None:
            first = time.perf_counter()
        sys.stdout.write(piece)
        sys.stdout.flush()
ended = time.perf_counter()
decoded = llama_cpp.llama_perf_context(llm.ctx).n_eval
sys.stdout.write("\n")
print(json.dumps({"ttft": first - started, "tps": decoded / (ended - first)}), file=sys.stderr)
"""

_STATS = re.compile(r"([\d.]+) tokens/s, time to first token (\d+) ms")


@dataclass(frozen=True, slots=True)
class Sample:
    tps: float
    ttft: float
    start_to_first: float
    wall: float
    text: str


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("worker", "buffers"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not MODEL.is_file():
        sys.exit(f"{MODEL} is missing: run make setup")

    parts = []
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        home = Path(tmp)
        _store_model(Layout(home / "store"), MODEL, REF)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCTL_")}
        env["MODELCTL_HOME"] = str(home)
        if args.only in (None, "worker"):
            parts.append(_worker_part(args, home, env))
        if args.only in (None, "buffers"):
            q4_0 = home / "SmolLM2-135M-Instruct-Q4_0.gguf"
            _requantize(MODEL, q4_0)
            _store_model(Layout(home / "store"), q4_0, REF_Q4_0, quantization="Q4_0")
            parts.append(_buffers_part(args, env))
    import llama_cpp

    head = [
        "# `modelctl run`: the worker's cost, and the CPU weight buffers",
        "",
        f"llama-cpp-python {llama_cpp.__version__}, Python {platform.python_version()}, {_cpu()}, "
        f"{os.cpu_count()} CPUs. llama.cpp's CPU line: `{llama_cpp.llama_print_system_info().decode().strip()}`",
        "",
        f"Settings: CPU only, `--ctx-size {args.ctx_size} --threads {args.threads} --max-tokens {args.max_tokens} "
        f"--seed {SEED} --temperature 0`, one-shot prompt {PROMPT!r}; {args.rounds} interleaved rounds, medians. "
        "Command: `.venv/bin/python benchmarks/run.py`"
        + (f" --rounds {args.rounds}" if args.rounds != 7 else "")
        + (f" --only {args.only}" if args.only else "")
        + ".",
        "",
        "",
    ]
    table = "\n".join(head) + "\n".join(parts)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


def _worker_part(args: argparse.Namespace, home: Path, env: dict[str, str]) -> str:
    """``modelctl run`` (model in a worker process) against llama-cpp-python in the measuring process."""
    script = home / "plain.py"
    script.write_text(PLAIN)
    settings = [str(args.ctx_size), str(args.threads), str(args.max_tokens), str(SEED), PROMPT]
    modelctl_cmd = _modelctl_cmd(args, REF)
    plain_cmd = [sys.executable, str(script), str(MODEL), *settings]

    _timed(modelctl_cmd, env, _modelctl_stats)  # warm the page cache and Python's bytecode cache
    _timed(plain_cmd, env, _plain_stats)
    ours: list[Sample] = []
    theirs: list[Sample] = []
    for i in range(args.rounds):
        pair = [(ours, modelctl_cmd, _modelctl_stats), (theirs, plain_cmd, _plain_stats)]
        for samples, cmd, parse in pair if i % 2 == 0 else reversed(pair):
            samples.append(_timed(cmd, env, parse))
        print(
            f"round {i + 1}: modelctl {ours[-1].tps:.1f} tok/s, plain {theirs[-1].tps:.1f} tok/s",
            file=sys.stderr,
        )
    same_text = all(a.text == b.text for a, b in zip(ours, theirs, strict=True))
    return _table(ours, theirs, same_text)


def _modelctl_cmd(args: argparse.Namespace, ref: str) -> list[str]:
    return [
        sys.executable, "-m", "modelctl", "run", ref, PROMPT, "--no-pull", "--verbose",
        "--ctx-size", str(args.ctx_size), "--threads", str(args.threads), "--max-tokens", str(args.max_tokens),
        "--seed", str(SEED), "--temperature", "0",
    ]  # fmt: skip


def _buffers_part(args: argparse.Namespace, env: dict[str, str]) -> str:
    """tokens/s and time to first token of ``modelctl run`` under each MODELCTL_CPU_BUFFERS setting."""
    lines = [
        "",
        "## CPU weight buffers (`MODELCTL_CPU_BUFFERS`)",
        "",
        "`auto` is the default (CPU_REPACK kept, AMX never); `none` uses the mmapped weights only; `all` is "
        "llama.cpp's own default (AMX first where the CPU has it). Ratio: the default's tokens/s over the fastest "
        "setting that does not crash, median of per-round ratios.",
        "",
        "| model | setting | tokens/s | time to first token (ms) | |",
        "|---|---|---:|---:|---|",
    ]
    verdicts = []
    for ref, label in ((REF, "SmolLM2-135M Q4_1"), (REF_Q4_0, "SmolLM2-135M Q4_0")):
        cmd = _modelctl_cmd(args, ref)
        samples: dict[str, list[Sample]] = {setting: [] for setting in SETTINGS}
        crashed: dict[str, str] = {}
        for setting in SETTINGS:  # warm-up, and find the settings that crash
            result = _try(cmd, {**env, "MODELCTL_CPU_BUFFERS": setting})
            if isinstance(result, str):
                crashed[setting] = result
        working = [s for s in SETTINGS if s not in crashed]
        for i in range(args.rounds):
            for setting in working if i % 2 == 0 else reversed(working):
                sample = _timed(cmd, {**env, "MODELCTL_CPU_BUFFERS": setting}, _modelctl_stats)
                samples[setting].append(sample)
            print(f"{label} round {i + 1}: " + ", ".join(f"{s} {samples[s][-1].tps:.1f}" for s in working),
                  file=sys.stderr)  # fmt: skip
        best = max(working, key=lambda s: statistics.median(x.tps for x in samples[s]))
        for setting in SETTINGS:
            if setting in crashed:
                lines.append(f"| {label} | {setting} | - | - | crashes: {crashed[setting]} |")
                continue
            tps = statistics.median(x.tps for x in samples[setting])
            ttft = statistics.median(x.ttft for x in samples[setting]) * 1000
            mark = "fastest" if setting == best else ""
            lines.append(f"| {label} | {setting} | {tps:.1f} | {ttft:.0f} | {mark} |")
        ratio = statistics.median(
            a.tps / b.tps for a, b in zip(samples["auto"], samples[best], strict=True)
        ) if "auto" in working else 0.0
        verdicts.append(f"{label}: default / fastest ({best}) = {ratio:.3f}")
    lines += ["", "; ".join(verdicts) + " (target >= 0.95).", ""]
    return "\n".join(lines)


def _try(cmd: list[str], env: dict[str, str]) -> Sample | str:
    """One run; a crash (exit 9) comes back as modelctl's description of it."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode == 9:
        match = re.search(r"runtime crashed \(([^)]*)\) while ([a-z ]+?)(?: for| with)? ai/", proc.stderr)
        return f"exit 9 ({match.group(1)}) while {match.group(2)}" if match else "exit 9"
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:5])}... failed ({proc.returncode}): {proc.stderr}")
    tps, ttft = _modelctl_stats(proc.stderr)
    return Sample(tps=tps, ttft=ttft, start_to_first=0.0, wall=0.0, text=proc.stdout)


def _requantize(source: Path, target: Path) -> None:
    """A Q4_0 copy of ``source`` made by llama.cpp's own quantiser (its log silenced)."""
    code = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0; p.allow_requantize = True; p.nthread = 2\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(source), str(target)], check=True, capture_output=True)


def _timed(cmd: list[str], env: dict[str, str], parse: Callable[[str], tuple[float, float]]) -> Sample:
    subprocess.run(["sync"], check=False)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    first_byte = proc.stdout.read(1)
    first = time.perf_counter()
    rest = proc.stdout.read()
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not first_byte:
        sys.exit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): {err.decode(errors='replace')}")
    tps, ttft = parse(err.decode(errors="replace"))
    text = (first_byte + rest).decode(errors="replace").strip()
    return Sample(tps=tps, ttft=ttft, start_to_first=first - started, wall=wall, text=text)


def _modelctl_stats(stderr: str) -> tuple[float, float]:
    match = _STATS.search(stderr)
    if match is None:
        sys.exit(f"no stats in modelctl's output: {stderr}")
    return float(match.group(1)), int(match.group(2)) / 1000


def _plain_stats(stderr: str) -> tuple[float, float]:
    doc = json.loads(stderr.strip().splitlines()[-1])
    return float(doc["tps"]), float(doc["ttft"])


def _store_model(store: Layout, model: Path, ref: str, *, quantization: str = "Q4_1") -> None:
    """``model`` as a Docker v0.1 model artifact tagged ``docker.io/<ref>``, as a pull leaves it."""
    store.ensure()
    data = model.read_bytes()
    layer = store.write_blob(data)
    config = json.dumps(
        {
            "config": {"format": "gguf", "quantization": quantization, "parameters": "135M", "architecture": "llama"},
            "descriptor": {"created": "2025-01-01T00:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [layer]},
        }
    ).encode()
    config_digest = store.write_blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.DOCKER_MODEL_CONFIG_V01, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": mt.DOCKER_GGUF, "digest": layer, "size": len(data)}],
        }
    ).encode()
    digest = store.write_blob(manifest)
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    store.tag(f"docker.io/{ref}", Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(manifest)))


def _table(ours: list[Sample], theirs: list[Sample], same_text: bool) -> str:
    def med(samples: list[Sample], field: str) -> float:
        return float(statistics.median(getattr(s, field) for s in samples))

    def ratio(field: str) -> float:
        return float(
            statistics.median(getattr(a, field) / getattr(b, field) for a, b in zip(ours, theirs, strict=True))
        )

    ttft_extra = statistics.median((a.ttft - b.ttft) * 1000 for a, b in zip(ours, theirs, strict=True))
    rows = [
        ("generation speed (tokens/s)", "tps", 1.0, "{:.1f}"),
        ("time to first token (ms)", "ttft", 1000.0, "{:.0f}"),
        ("process start to first token (ms)", "start_to_first", 1000.0, "{:.0f}"),
        ("process wall time (ms)", "wall", 1000.0, "{:.0f}"),
    ]
    lines = [
        "## The worker process: `modelctl run` vs plain llama-cpp-python in one process",
        "",
        "SmolLM2-135M-Instruct Q4_1; ratio = median of per-round modelctl / plain. modelctl's time to first token "
        "is taken in the CLI, from sending the request to the worker to receiving the first piece.",
        "",
        "| metric | modelctl run (worker) | plain script (in-process) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, field, scale, fmt in rows:
        lines.append(
            f"| {label} | {fmt.format(med(ours, field) * scale)} | {fmt.format(med(theirs, field) * scale)} "
            f"| {ratio(field):.3f} |"
        )
    lines += [
        "",
        f"Time to first token, worker minus in-process: {ttft_extra:+.1f} ms (median of per-round differences; "
        "target <= +50 ms); tokens/s ratio target >= 0.98. "
        f"Identical answers from both in every round: {'yes' if same_text else 'NO'}.",
        "",
    ]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
