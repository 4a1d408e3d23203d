"""``modelctl serve`` against llama-cpp-python's own OpenAI server, same model and settings, in one run.

Both servers load SmolLM2-135M-Instruct (Q4_1) with the same context, batch, thread defaults and CPU weight
buffers (the baseline gets modelctl's buffer choice for every load it makes, or llama.cpp's AMX path would crash
it on this Xeon), and answer the same streamed chat completion greedily. Every figure is measured by this client,
the same way for both: time to first token from sending the request to the first streamed text, generation speed
as streamed pieces after the first one over the time after it.

* warm, one client: rounds alternate the two servers (the machine's 2 cores are shared and noisy); the verdict is
  the median of the per-round ratios (tokens/s ours/theirs, time to first token ours - theirs);
* cold: fresh server processes (rounds / 3 of each, alternating), from start to the first token (ours loads on the
  first request; theirs at start), and the first request's time to first token;
* switching between two models: alternate requests for two models; ours with memory for both (they stay loaded),
  ours with ``--memory`` for one (each switch unloads and loads), theirs (its proxy swaps the model per request);
* 8 concurrent clients on one model: aggregate tokens/s (both answer one request at a time per model).

    .venv/bin/python benchmarks/serve.py [--rounds 11] [--max-tokens 96] [--ctx-size 2048] [--only warm|cold|switching]

Prints a Markdown report (docs/benchmarks.md holds the latest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
A, B = "ai/smollm2:bench-a", "ai/smollm2:bench-b"
PROMPT = "Write a long story about a lighthouse keeper and a storm."
ONE_MODEL = "500MiB"
"""A --memory that holds one SmolLM2 at context 2048 but not two."""


@dataclass(frozen=True, slots=True)
class Sample:
    ttft: float
    tps: float
    tokens: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stream(url: str, model: str, max_tokens: int, prompt: str = PROMPT) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 42,
        "stream": True,
    }
    sent = time.perf_counter()
    first = last = None
    pieces = 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0].get("delta", {}).get("content"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    assert first is not None and last is not None, "no text streamed"
    return Sample(ttft=first - sent, tps=(pieces - 1) / (last - first) if last > first else 0.0, tokens=pieces)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError("the server did not answer")


@contextmanager
def server(argv: list[str], env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    port = free_port()
    started = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=out, stderr=out, cwd=ROOT)
    try:
        yield f"http://127.0.0.1:{port}", proc, started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ours(ctx: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelctl", "serve", "--ctx-size", str(ctx), *extra]


def theirs(ctx: int, *aliases: str) -> list[str]:
    return [sys.executable, __file__, "--baseline", "--ctx-size", str(ctx), *(f"--alias={a}" for a in aliases)]


def baseline(ctx: int, port: int, aliases: list[str]) -> None:
    """llama-cpp-python's server (uvicorn), loading with modelctl's CPU weight buffers for the whole process."""
    sys.path.insert(0, str(ROOT))
    import uvicorn
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from modelctl.config import from_env
    from modelctl.runtime.engine import LoadSpec, weight_buffers

    load = LoadSpec(model_path=MODEL, n_ctx=ctx, cpu_buffers=from_env().cpu_buffers, files=(MODEL,))
    buffers = weight_buffers(load)
    buffers.__enter__()  # for every load of this process, the proxy's swaps included (kept referenced until the end)
    models = [
        ModelSettings(
            model=str(MODEL), model_alias=alias, logits_all=False, chat_format=None, cache=False, **load.llama_kwargs()
        )
        for alias in aliases
    ]
    app = server_app.create_app(server_settings=ServerSettings(host="127.0.0.1", port=port), model_settings=models)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        buffers.__exit__(None, None, None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers(pid: int) -> list[int]:
    """The runtime worker processes of our server."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if parent == pid and b"modelctl.runtime.worker" in command:
                found.append(int(entry.name))
    return found


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def warm(args: argparse.Namespace, env: dict[str, str], log: Path) -> list[str]:
    with (
        server(ours(args.ctx_size, A), env, log) as (our_url, our_proc, _),
        server(theirs(args.ctx_size, A), env, log) as (their_url, their_proc, _),
    ):
        wait_ready(our_url, our_proc)
        wait_ready(their_url, their_proc)
        stream(our_url, A, 8)  # both loaded and warmed up
        stream(their_url, A, 8)
        rows, tps_ratio, ttft_delta = [], [], []
        processes = {"ours: server": [our_proc.pid], "ours: worker": workers(our_proc.pid), "theirs": [their_proc.pid]}
        cpu = dict.fromkeys(processes, 0.0)
        tokens = {"ours": 0, "theirs": 0}
        for i in range(args.rounds):
            order = [("ours", our_url), ("theirs", their_url)]
            if i % 2:
                order.reverse()
            got = {}
            for name, url in order:
                before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in processes.items() if k.startswith(name)}
                got[name] = stream(url, A, args.max_tokens)
                for k, value in before.items():
                    cpu[k] += sum(cpu_seconds(p) for p in processes[k]) - value
                tokens[name] += got[name].tokens
            tps_ratio.append(got["ours"].tps / got["theirs"].tps)
            ttft_delta.append((got["ours"].ttft - got["theirs"].ttft) * 1000)
            rows.append(
                f"| {i + 1} | {got['ours'].tps:.1f} | {got['theirs'].tps:.1f} | {tps_ratio[-1]:.3f} | "
                f"{got['ours'].ttft * 1000:.0f} | {got['theirs'].ttft * 1000:.0f} | {ttft_delta[-1]:+.0f} | "
                f"{got['ours'].tokens} / {got['theirs'].tokens} |"
            )
        ours_tokens = max(tokens["ours"], 1)
        concurrent = {name: clients(url, A, 8, 32) for name, url in (("ours", our_url), ("theirs", their_url))}
    return [
        f"### One client, warm ({args.rounds} rounds, {args.max_tokens} tokens, order alternating)",
        "",
        "| round | ours tokens/s | theirs tokens/s | ratio | ours TTFT ms | theirs TTFT ms | TTFT delta ms | pieces |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        f"| **median** | | | **{median(tps_ratio):.3f}** | | | **{median(ttft_delta):+.0f}** | |",
        "",
        "CPU time per streamed token over those rounds (less sensitive to the shared cores than wall time):",
        "",
        "| process | ms CPU per token |",
        "|---|---|",
        *(f"| {k} | {cpu[k] * 1000 / max(tokens[k.split(':')[0]], 1):.2f} |" for k in cpu),
        f"| ours: server + worker | {(cpu['ours: server'] + cpu['ours: worker']) * 1000 / ours_tokens:.2f} |",
        "",
        "### 8 concurrent clients on one model (32 tokens each)",
        "",
        "| server | aggregate tokens/s | wall s | every answer complete |",
        "|---|---|---|---|",
        *(f"| {name} | {tps:.1f} | {wall:.2f} | {ok} |" for name, (tps, wall, ok) in concurrent.items()),
        "",
    ]


def clients(url: str, model: str, count: int, max_tokens: int) -> tuple[float, float, bool]:
    results: list[Sample] = []
    lock = threading.Lock()

    def one() -> None:
        sample = stream(url, model, max_tokens, "Tell me about the sea.")
        with lock:
            results.append(sample)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return sum(s.tokens for s in results) / wall, wall, len(results) == count and all(s.tokens for s in results)


def cold(args: argparse.Namespace, env: dict[str, str], log: Path) -> list[str]:
    setups = (
        ("ours (loads on the first request)", ours(args.ctx_size)),
        ("theirs (loads at start)", theirs(args.ctx_size, A)),
    )
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in setups}
    for i in range(max(args.rounds // 3, 1)):
        for name, argv in setups if i % 2 == 0 else reversed(setups):
            with server(argv, env, log) as (url, proc, started):
                ready = wait_ready(url, proc)
                samples[name].append((ready - started, stream(url, A, 16).ttft))
    rows = []
    for name, got in samples.items():
        up, first = median([g[0] for g in got]), median([g[1] for g in got])
        rows.append(f"| {name} | {up:.2f} | {first:.2f} | {median([a + b for a, b in got]):.2f} |")
    return [
        f"### Cold start (medians of {len(next(iter(samples.values())))} fresh processes each)",
        "",
        "| server | process start -> answering s | first request TTFT s | start -> first token s |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def switching(args: argparse.Namespace, env: dict[str, str], log: Path) -> list[str]:
    rows = []
    setups = (
        ("ours, memory for both (they stay loaded)", ours(args.ctx_size)),
        (f"ours, --memory {ONE_MODEL} (each switch unloads and loads)", ours(args.ctx_size, "--memory", ONE_MODEL)),
        ("theirs (the proxy swaps per request)", theirs(args.ctx_size, A, B)),
    )
    for name, argv in setups:
        with server(argv, env, log) as (url, proc, _):
            wait_ready(url, proc)
            stream(url, A, 4)
            stream(url, B, 4)
            ttfts = [stream(url, model, 16).ttft for model in [A, B] * args.rounds]
            rows.append(f"| {name} | {median(ttfts) * 1000:.0f} | {max(ttfts) * 1000:.0f} |")
    return [
        f"### Switching between two models ({2 * args.rounds} requests alternating A, B)",
        "",
        "| server | median TTFT ms | worst TTFT ms |",
        "|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--only", choices=("warm", "cold", "switching"), help="run one part")
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--alias", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline(args.ctx_size, args.port, args.alias)
        return
    if not MODEL.is_file():
        sys.exit(f"{MODEL} is missing: run make setup")
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-serve-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCTL_")}
        env["MODELCTL_HOME"] = str(home)
        for ref, extra in ((A, []), (B, ["--context-size", str(args.ctx_size)])):  # two manifests, two models
            subprocess.run(
                [sys.executable, "-m", "modelctl", "package", "--gguf", str(MODEL), *extra, ref],
                env=env,
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
        log = home / "servers.log"
        parts = [
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; SmolLM2-135M-Instruct Q4_1,"
            f" context {args.ctx_size}, greedy, llama-cpp-python's default threads for both.",
            "",
        ]
        try:
            for part in (warm, cold, switching):
                if args.only in (None, part.__name__):
                    parts += part(args, env, log)
        except RuntimeError:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)  # what the server said
            raise
    print("\n".join(parts))


if __name__ == "__main__":
    main()
