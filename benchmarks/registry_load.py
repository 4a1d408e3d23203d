"""Load: many concurrent clients pulling and pushing against our registry and Debian's docker-registry.

Each client (an httpx.AsyncClient with its own connection, all in one asyncio loop) runs a weighted mix until the
deadline: full and ranged blob GETs, blob HEADs, manifest GET/HEAD by tag and by digest, monolithic (POST + PUT)
and chunked (POST, PATCHes, PUT) blob pushes of fresh content, and manifest PUTs read back by tag. Every byte
pulled is checked against its digest (a ranged GET against the digest-checked seed bytes); any unexpected status,
header or byte is an error. Both servers run on loopback in the same run, one after the other (several rounds
alternate the order). The server's peak RSS comes from /proc/<pid>/status (VmHWM), its CPU from /proc/<pid>/stat.

Usage: .venv/bin/python benchmarks/registry_load.py [--seconds 30] [--clients 50] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _harness import Registry, docker_registry, our_registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.docker.ai.model.config.v0.1+json"
LAYER_TYPE = "application/vnd.docker.ai.gguf.v3"
SEED_SIZES = (4 << 10, 256 << 10, 1 << 20, 4 << 20)
MONOLITHIC_SIZE = 256 << 10
CHUNK = 256 << 10
CHUNKS = 4
RANGE_MAX = 512 << 10
REQUEST_TIMEOUT = 60.0
DRAIN_GRACE = 60.0
ERROR_SAMPLES = 5
SEED_REPO = "load/seed"
PUSH_REPO = "load/push"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LoadError(Exception):
    """A wrong answer: status, header or bytes."""


@dataclass(frozen=True)
class Seed:
    """What every server holds before the load starts: blobs and tagged manifests, all bytes known."""

    blobs: list[tuple[str, bytes]]
    config: tuple[str, bytes]
    manifests: list[tuple[str, str, bytes]]  # (tag, digest, bytes)


def make_seed() -> Seed:
    blobs = [(sha256(b), b) for b in (os.urandom(n) for n in SEED_SIZES)]
    config = json.dumps({"config": {"format": "gguf"}, "rootfs": {"type": "rootfs", "diff_ids": []}}).encode()
    manifests = []
    for i, (digest, data) in enumerate(blobs):
        raw = manifest_bytes(sha256(config), len(config), digest, len(data), f"seed-{i}")
        manifests.append((f"t{i}", sha256(raw), raw))
    return Seed(blobs, (sha256(config), config), manifests)


def manifest_bytes(config_digest: str, config_size: int, layer: str, size: int, note: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer, "size": size}],
            "annotations": {"load.note": note},
        }
    ).encode()


@dataclass
class Tally:
    """One server's figures over all rounds."""

    requests: int = 0
    errors: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    ops: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    rss_before: list[int] = field(default_factory=list)
    rss_after: list[int] = field(default_factory=list)
    rss_peak_kib: int = 0

    def error(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(f"{op}: {type(exc).__name__}: {exc}"[:300])


class Client:
    """One simulated client: its own connection, its own counters, its own pushed content."""

    def __init__(self, index: int, label: str, base: str, seed: Seed, pool: bytes, tally: Tally) -> None:
        self.index, self.base, self.seed, self.pool, self.tally = index, base, seed, pool, tally
        self.label = label
        self.http = httpx.AsyncClient(
            base_url=base, timeout=REQUEST_TIMEOUT, limits=httpx.Limits(max_connections=1), trust_env=False
        )
        self.rng = random.Random(index)
        self.counter = 0
        self.pushed: list[tuple[str, int]] = []  # blobs this client pushed to PUSH_REPO

    async def request(
        self, method: str, url: str | httpx.URL, *, expect: int, content: bytes | None = None, **kw: object
    ) -> httpx.Response:
        response = await self.http.request(method, url, content=content, **kw)  # type: ignore[arg-type]
        self.tally.requests += 1
        self.tally.bytes_down += len(response.content)
        self.tally.bytes_up += len(content or b"")
        if response.status_code != expect:
            raise LoadError(f"{method} {url} -> {response.status_code} (expected {expect}): {response.text[:200]}")
        return response

    def fresh(self, size: int) -> bytes:
        """Content no other push of this run has: a unique 32-byte stamp on the shared random pool."""
        self.counter += 1
        stamp = f"{self.label}:{self.index}:{self.counter}:".encode().ljust(32, b".")
        return stamp + self.pool[: size - len(stamp)]

    def upload_url(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise LoadError(f"{response.request.method} {response.request.url}: no Location")
        return httpx.URL(self.base).join(location)

    # -- operations -----------------------------------------------------------------------------------
    async def blob_get(self) -> None:
        digest, _ = self.rng.choice(self.seed.blobs)
        body = (await self.request("GET", f"/v2/{SEED_REPO}/blobs/{digest}", expect=200)).content
        if sha256(body) != digest:
            raise LoadError(f"blob {digest}: {len(body)} bytes hash to {sha256(body)}")

    async def blob_range(self) -> None:
        digest, data = self.rng.choice(self.seed.blobs)
        start = self.rng.randrange(len(data))
        end = min(len(data) - 1, start + self.rng.randrange(1, RANGE_MAX))
        r = await self.request(
            "GET", f"/v2/{SEED_REPO}/blobs/{digest}", expect=206, headers={"Range": f"bytes={start}-{end}"}
        )
        if r.content != data[start : end + 1]:
            raise LoadError(f"range {start}-{end} of {digest}: wrong bytes ({len(r.content)})")
        if not r.headers.get("Content-Range", "").startswith(f"bytes {start}-{end}/"):
            raise LoadError(f"range {start}-{end} of {digest}: Content-Range {r.headers.get('Content-Range')}")

    async def blob_head(self) -> None:
        digest, data = self.rng.choice(self.seed.blobs)
        r = await self.request("HEAD", f"/v2/{SEED_REPO}/blobs/{digest}", expect=200)
        if int(r.headers.get("Content-Length", -1)) != len(data):
            raise LoadError(f"HEAD blob {digest}: Content-Length {r.headers.get('Content-Length')}")

    async def manifest_get(self, *, by_digest: bool, method: str = "GET") -> None:
        tag, digest, raw = self.rng.choice(self.seed.manifests)
        r = await self.request(
            method,
            f"/v2/{SEED_REPO}/manifests/{digest if by_digest else tag}",
            expect=200,
            headers={"Accept": OCI_MANIFEST},
        )
        if r.headers.get("Docker-Content-Digest") != digest:
            raise LoadError(f"manifest {tag}: Docker-Content-Digest {r.headers.get('Docker-Content-Digest')}")
        if method == "GET" and r.content != raw:
            raise LoadError(f"manifest {tag}: {len(r.content)} wrong bytes")
        if method == "HEAD" and int(r.headers.get("Content-Length", -1)) != len(raw):
            raise LoadError(f"HEAD manifest {tag}: Content-Length {r.headers.get('Content-Length')}")

    async def push_monolithic(self) -> None:
        data = self.fresh(MONOLITHIC_SIZE)
        digest = sha256(data)
        started = await self.request("POST", f"/v2/{PUSH_REPO}/blobs/uploads/", expect=202)
        url = self.upload_url(started).copy_merge_params({"digest": digest})
        r = await self.request(
            "PUT", url, expect=201, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        self.created(r, digest, len(data))

    async def push_chunked(self) -> None:
        data = self.fresh(CHUNK * CHUNKS)
        digest = sha256(data)
        url = self.upload_url(await self.request("POST", f"/v2/{PUSH_REPO}/blobs/uploads/", expect=202))
        for offset in range(0, len(data), CHUNK):
            piece = data[offset : offset + CHUNK]
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            }
            url = self.upload_url(await self.request("PATCH", url, expect=202, content=piece, headers=headers))
        r = await self.request("PUT", url.copy_merge_params({"digest": digest}), expect=201, content=b"")
        self.created(r, digest, len(data))
        body = (await self.request("GET", f"/v2/{PUSH_REPO}/blobs/{digest}", expect=200)).content
        if body != data:
            raise LoadError(f"pushed blob {digest} read back as {len(body)} other bytes")

    def created(self, r: httpx.Response, digest: str, size: int) -> None:
        if r.headers.get("Docker-Content-Digest") != digest:
            raise LoadError(f"push of {digest}: Docker-Content-Digest {r.headers.get('Docker-Content-Digest')}")
        self.pushed = [*self.pushed[-7:], (digest, size)]

    async def manifest_put(self) -> None:
        if not self.pushed:
            await self.push_monolithic()
        layer, size = self.rng.choice(self.pushed)
        config_digest, config = self.seed.config
        self.counter += 1
        raw = manifest_bytes(config_digest, len(config), layer, size, f"{self.label}:{self.index}:{self.counter}")
        digest, tag = sha256(raw), f"c{self.index}"
        headers = {"Content-Type": OCI_MANIFEST}
        r = await self.request("PUT", f"/v2/{PUSH_REPO}/manifests/{tag}", expect=201, content=raw, headers=headers)
        if r.headers.get("Docker-Content-Digest") != digest:
            raise LoadError(f"manifest PUT {tag}: Docker-Content-Digest {r.headers.get('Docker-Content-Digest')}")
        # Only this client writes its tag: reading it back must give exactly what was put.
        url = f"/v2/{PUSH_REPO}/manifests/{tag}"
        got = await self.request("GET", url, expect=200, headers={"Accept": OCI_MANIFEST})
        if got.content != raw:
            raise LoadError(f"manifest {tag} read back as other bytes right after its PUT")

    def mix(self) -> list[tuple[str, Callable[[], Awaitable[None]], int]]:
        return [
            ("blob GET", self.blob_get, 18),
            ("blob GET ranged", self.blob_range, 14),
            ("blob HEAD", self.blob_head, 6),
            ("manifest GET tag", lambda: self.manifest_get(by_digest=False), 14),
            ("manifest GET digest", lambda: self.manifest_get(by_digest=True), 10),
            ("manifest HEAD tag", lambda: self.manifest_get(by_digest=False, method="HEAD"), 7),
            ("manifest HEAD digest", lambda: self.manifest_get(by_digest=True, method="HEAD"), 7),
            ("push monolithic", self.push_monolithic, 10),
            ("push chunked", self.push_chunked, 5),
            ("manifest PUT", self.manifest_put, 9),
        ]

    async def run(self, deadline: float) -> None:
        mix = self.mix()
        names, ops, weights = zip(*mix, strict=True)
        try:
            while time.monotonic() < deadline:
                i = self.rng.choices(range(len(ops)), weights)[0]
                try:
                    await ops[i]()
                except (LoadError, httpx.HTTPError) as exc:
                    self.tally.error(names[i], exc)
                self.tally.ops[names[i]] += 1
        finally:
            await self.http.aclose()


# -- the server's process ----------------------------------------------------------------------------------
def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one run -----------------------------------------------------------------------------------------------
def seed_server(host: str, seed: Seed) -> None:
    with httpx.Client(base_url=f"http://{host}", timeout=60, trust_env=False) as http:
        for repo in (SEED_REPO, PUSH_REPO):
            for digest, data in [*seed.blobs, seed.config]:
                loc = http.post(f"/v2/{repo}/blobs/uploads/").raise_for_status().headers["Location"]
                url = httpx.URL(f"http://{host}").join(loc).copy_merge_params({"digest": digest})
                http.put(url, content=data).raise_for_status()
        for tag, _, raw in seed.manifests:
            http.put(
                f"/v2/{SEED_REPO}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST}
            ).raise_for_status()


async def load(server: Registry, label: str, seed: Seed, pool: bytes, clients: int, seconds: float, t: Tally) -> None:
    rss_samples: list[int] = []

    async def watch() -> None:
        while True:
            rss_samples.append(proc_status(server.pid, "VmRSS"))
            await asyncio.sleep(0.5)

    t.rss_before.append(proc_status(server.pid, "VmRSS"))
    cpu0, self0, start = proc_cpu(server.pid), self_cpu(), time.monotonic()
    deadline = start + seconds
    workers = [Client(i, label, f"http://{server.host}", seed, pool, t) for i in range(clients)]
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(asyncio.gather(*(w.run(deadline) for w in workers)), seconds + DRAIN_GRACE)
    except TimeoutError as exc:
        t.error("drain", exc)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    t.seconds += time.monotonic() - start
    t.server_cpu += proc_cpu(server.pid) - cpu0
    t.client_cpu += self_cpu() - self0
    t.rss_after.append(proc_status(server.pid, "VmRSS"))
    t.rss_peak_kib = max(t.rss_peak_kib, proc_status(server.pid, "VmHWM"), *rss_samples)


@contextlib.contextmanager
def both_servers(work: Path) -> Iterator[dict[str, Registry]]:
    with our_registry(work / "ours") as ours, docker_registry() as theirs:
        yield {"modelctl registry": ours, "docker-registry 2.8": theirs}


def summary(t: Tally) -> dict[str, object]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "error_samples": t.samples,
        "seconds": round(t.seconds, 1),
        "requests_per_s": round(t.requests / t.seconds, 1),
        "mb_per_s": round((t.bytes_down + t.bytes_up) / t.seconds / 1e6, 1),
        "mb_down": round(t.bytes_down / 1e6),
        "mb_up": round(t.bytes_up / 1e6),
        "server_cpu_s": round(t.server_cpu, 1),
        "server_cpu_ms_per_request": round(1000 * t.server_cpu / max(t.requests, 1), 3),
        "client_cpu_s": round(t.client_cpu, 1),
        "rss_mib_before": [round(k / 1024) for k in t.rss_before],
        "rss_mib_after": [round(k / 1024) for k in t.rss_after],
        "rss_peak_mib": round(t.rss_peak_kib / 1024),
        "ops": dict(sorted(t.ops.items())),
    }


def table(result: dict[str, object]) -> str:
    servers: dict[str, dict[str, object]] = result["servers"]  # type: ignore[assignment]
    ours, theirs = servers["modelctl registry"], servers["docker-registry 2.8"]
    rows = [
        ("requests", "requests"),
        ("errors", "errors"),
        ("requests/s", "requests_per_s"),
        ("MB/s (up + down)", "mb_per_s"),
        ("server CPU ms / request", "server_cpu_ms_per_request"),
        ("server peak RSS, MiB", "rss_peak_mib"),
        ("server RSS before / after each round, MiB", None),
    ]
    out = [
        f"## {result['clients']} clients x {result['seconds']} s, {result['rounds']} round(s)\n",
        "| measure | modelctl registry | docker-registry 2.8 |",
        "|---|---|---|",
    ]
    for title, key in rows:
        if key is None:
            cells = [
                " ".join(f"{a}/{b}" for a, b in zip(s["rss_mib_before"], s["rss_mib_after"], strict=True))  # type: ignore[call-overload]
                for s in (ours, theirs)
            ]
        else:
            cells = [str(ours[key]), str(theirs[key])]
        out.append(f"| {title} | {cells[0]} | {cells[1]} |")
    out.append(
        f"\nthroughput ratio ours / distribution: {result['ratio_requests_per_s']}x requests/s, "
        f"{result['ratio_mb_per_s']}x MB/s"
    )
    for label, s in servers.items():
        if s["error_samples"]:
            out.append(f"\n{label} errors: " + "; ".join(s["error_samples"]))  # type: ignore[arg-type]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="load time per server per round")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the order of the servers alternates")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seed, pool = make_seed(), os.urandom(CHUNK * CHUNKS)
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, both_servers(Path(tmp)) as servers:
        for label, server in servers.items():
            seed_server(server.host, seed)
            tallies[label] = Tally()
        order = list(servers)
        for round_no in range(args.rounds):
            for label in order if round_no % 2 == 0 else order[::-1]:
                short = "ours" if label.startswith("modelctl") else "dist"
                asyncio.run(
                    load(servers[label], f"{short}{round_no}", seed, pool, args.clients, args.seconds, tallies[label])
                )
                print(f"round {round_no + 1}: {label} done", file=sys.stderr)
    figures = {label: summary(t) for label, t in tallies.items()}
    ours, theirs = figures["modelctl registry"], figures["docker-registry 2.8"]
    result: dict[str, object] = {
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "servers": figures,
        "ratio_requests_per_s": round(ours["requests_per_s"] / theirs["requests_per_s"], 2),  # type: ignore[operator]
        "ratio_mb_per_s": round(ours["mb_per_s"] / theirs["mb_per_s"], 2),  # type: ignore[operator]
    }
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if any(t.errors for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
