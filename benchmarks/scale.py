"""Cost at fleet scale: does a per-item operation stay flat as the number of items grows?

One function per section; each builds what it measures at every size given (``--sizes 100 10000``), times it and
returns rows for the markdown table that ``main`` prints.

Section ``registry``: a registry of N repositories (one tagged manifest each, tiny blobs), written straight into
the storage layout (pushing 10,000 repositories would measure the push); then, against the running server, a full
catalog walk (``GET /v2/_catalog?n=PAGE`` following ``Link`` until the end) and a single page from the middle
(``?n=PAGE&last=<the middle name>``). The first walk after start includes the server's one directory walk; later
walks page a listing the server keeps. ``--source DIR`` runs the registry from another source tree (an older
commit, exported with ``git archive``) for before/after figures; ``--distribution`` times Debian's docker-registry
over the same repositories (written in its own layout).

Section ``client``: a local store of N tiny models (a distinct 60-byte GGUF each, its config and manifest written
with the store's own API, all tagged in one index write), then the commands a fleet runs, each in a fresh process
as a user runs it: ``list``, ``pull --locked`` of one present model (no network), ``pull --locked`` of up to
``--locked-count`` present models, ``rm`` of one model, ``prune``. Per-model cost: the time divided by the models
a command handles (``list`` and ``prune`` handle the whole store; ``pull`` of one and ``rm`` one). ``--source``
runs the commands from that tree too (the store is written by this one; the layout is the same).

Usage: .venv/bin/python benchmarks/scale.py [--section registry|client] [--sizes 100 10000] [--page 100] [--rounds 3]
       [--source DIR] [--distribution]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from _harness import docker_registry, our_registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SINGLE_PAGES = 50
"""Single-page requests timed per round (their median is reported)."""


@dataclass(frozen=True)
class Row:
    section: str
    measure: str
    size: int
    seconds: float
    per_item_us: float | None = None


# -- registry -----------------------------------------------------------------------------------------------


def repo_names(count: int) -> list[str]:
    """Names as a fleet has them: a few namespaces, many models."""
    return [f"team{i % 10}/model-{i:06d}" for i in range(count)]


def _tiny_artifact() -> dict[str, bytes]:
    """digest -> bytes of one tiny model: a config, a 4-byte layer and the manifest naming them (sha256)."""
    config, layer = b'{"config":{"format":"gguf"}}', b"GGUF"

    def desc(data: bytes, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(config, "application/vnd.docker.ai.model.config.v0.1+json"),
            "layers": [desc(layer, "application/vnd.docker.ai.gguf.v3")],
        }
    ).encode()
    return {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in (config, layer, manifest)}


def write_ours(root: Path, names: list[str]) -> None:
    """Our storage layout (``registry/storage.py``): shared blobs, per-repository links, revision and tag."""
    blobs = _tiny_artifact()
    *layers, manifest = blobs
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "uploads").mkdir()
    for digest, data in blobs.items():
        (root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    for name in names:
        repo = root / "repositories" / name
        for digest in layers:
            link = repo / "_layers" / "sha256" / digest[7:]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.touch()
        revision = repo / "_manifests" / "revisions" / "sha256" / manifest[7:]
        revision.parent.mkdir(parents=True)
        revision.write_text(OCI_MANIFEST)
        (repo / "_manifests" / "tags").mkdir()
        (repo / "_manifests" / "tags" / "1").write_text(manifest)


def write_distribution(data: Path, names: list[str]) -> None:
    """Distribution 2.8's filesystem layout (``docker/registry/v2``): blobs and per-repository link files."""
    v2 = data / "docker" / "registry" / "v2"
    blobs = _tiny_artifact()
    *layers, manifest = blobs
    for digest, content in blobs.items():
        path = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    for name in names:
        repo = v2 / "repositories" / name
        for digest in layers:
            link = repo / "_layers" / "sha256" / digest[7:] / "link"
            link.parent.mkdir(parents=True)
            link.write_text(digest)
        revision = repo / "_manifests" / "revisions" / "sha256" / manifest[7:] / "link"
        revision.parent.mkdir(parents=True)
        revision.write_text(manifest)
        for leaf in ("current", f"index/sha256/{manifest[7:]}"):
            tag = repo / "_manifests" / "tags" / "1" / leaf / "link"
            tag.parent.mkdir(parents=True)
            tag.write_text(manifest)


def catalog_walk(client: httpx.Client, page: int) -> tuple[float, int]:
    """Seconds for every page of the catalog, and how many repositories it listed."""
    url: str | None = f"/v2/_catalog?n={page}"
    listed = 0
    started = time.perf_counter()
    while url is not None:
        response = client.get(url)
        response.raise_for_status()
        listed += len(response.json()["repositories"] or [])
        link = response.headers.get("Link")
        url = link[link.index("<") + 1 : link.index(">")] if link else None
    return time.perf_counter() - started, listed


def single_page(client: httpx.Client, page: int, last: str) -> float:
    """The median of ``SINGLE_PAGES`` requests for the page after ``last``."""
    times = []
    for _ in range(SINGLE_PAGES):
        started = time.perf_counter()
        response = client.get("/v2/_catalog", params={"n": page, "last": last})
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times)


@contextlib.contextmanager
def _in_directory(path: Path | None) -> Iterator[None]:
    """Run the registry from ``path`` (``python -m registry`` imports the tree it starts in)."""
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _time_catalog(label: str, url: str, names: list[str], args: argparse.Namespace) -> list[Row]:
    size = len(names)
    with httpx.Client(base_url=url, timeout=600) as client:
        first, listed = catalog_walk(client, args.page)
        if listed != size:
            raise RuntimeError(f"{label}: the walk listed {listed} of {size} repositories")
        warm = statistics.median(catalog_walk(client, args.page)[0] for _ in range(args.rounds))
        page = single_page(client, args.page, sorted(names)[size // 2])
    return [
        Row("registry", f"{label}: first catalog walk (n={args.page})", size, first, first / size * 1e6),
        Row("registry", f"{label}: catalog walk (n={args.page})", size, warm, warm / size * 1e6),
        Row("registry", f"{label}: one page from the middle (n={args.page})", size, page),
    ]


def registry_section(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for size in args.sizes:
        names = repo_names(size)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            root = Path(tmp) / "ours"
            started = time.perf_counter()
            write_ours(root, names)
            print(f"wrote {size} repositories in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            label = "modelctl registry" + (f" ({args.source.name})" if args.source else "")
            with _in_directory(args.source), our_registry(root) as server:
                rows += _time_catalog(label, f"http://{server.host}", names, args)
        if args.distribution:
            with docker_registry() as theirs:
                write_distribution(theirs.root / "data", names)
                rows += _time_catalog("docker-registry 2.8", f"http://{theirs.host}", names, args)
    return rows


# -- client -------------------------------------------------------------------------------------------------


def tiny_gguf(i: int) -> bytes:
    """A header-only GGUF (v3, no tensors, two keys) whose name makes every model's digest distinct."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return struct.pack("<Q", len(raw)) + raw

    def kv(key: str, value: str) -> bytes:
        return text(key) + struct.pack("<I", 8) + text(value)  # 8: GGUF string

    pairs = kv("general.architecture", "llama") + kv("general.name", f"model-{i:06d}")
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + pairs


def model_names(count: int) -> list[str]:
    return [f"docker.io/team{i % 10}/model-{i:06d}:1" for i in range(count)]


def write_store(store_dir: Path, names: list[str]) -> dict[str, str]:
    """N models written straight into the store (blobs, then one index write); reference -> manifest digest."""
    from modelctl.oci import mediatypes as mt
    from modelctl.oci.descriptor import Descriptor
    from modelctl.services import package
    from modelctl.store import Layout

    store = Layout(store_dir)
    store.ensure()
    tags: list[tuple[str, Descriptor]] = []
    for i, name in enumerate(names):
        data = tiny_gguf(i)
        digest = store.write_blob(data)
        layer = Descriptor(
            media_type=mt.DOCKER_GGUF, digest=digest, size=len(data), annotations={mt.FILEPATH: "model.gguf"}
        )
        desc, _ = package.write_model(
            store, [layer], first_gguf=store.blob_path(digest), context_size=None, created="2026-01-01T00:00:00Z"
        )
        tags.append((name, desc))
    store.tag_many(tags)
    return {name: str(desc.digest) for name, desc in tags}


def write_lockfile(path: Path, digests: dict[str, str]) -> Path:
    models = [{"reference": ref, "digest": digest} for ref, digest in sorted(digests.items())]
    path.write_text(json.dumps({"version": 1, "models": models}))
    return path


def _modelctl(args: argparse.Namespace, home: Path) -> Callable[..., float]:
    """Seconds one ``modelctl`` command takes in a fresh process (from ``--source`` when given)."""
    env = {**os.environ, "MODELCTL_HOME": str(home), "NO_COLOR": "1"}

    def run(*argv: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "modelctl", *argv],
            env=env,
            cwd=args.source or Path(__file__).resolve().parent.parent,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    return run


def client_section(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    label = "modelctl" + (f" ({args.source.name})" if args.source else "")
    for size in args.sizes:
        names = model_names(size)
        with tempfile.TemporaryDirectory(prefix="bench-scale-client-") as tmp:
            home = Path(tmp)
            started = time.perf_counter()
            digests = write_store(home / "store", names)
            print(f"wrote {size} models in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            run = _modelctl(args, home)
            many = min(args.locked_count, size)
            one_lock = write_lockfile(home / "one.lock", {names[size // 2]: digests[names[size // 2]]})
            many_lock = write_lockfile(home / "many.lock", {n: digests[n] for n in names[:many]})
            run("pull", "--locked", str(many_lock))  # the first pull makes the models' file views
            timings = {
                "list": statistics.median(run("list") for _ in range(args.rounds)),
                "one": statistics.median(run("pull", "--locked", str(one_lock)) for _ in range(args.rounds)),
                "many": statistics.median(run("pull", "--locked", str(many_lock)) for _ in range(args.rounds)),
                "rm": statistics.median(run("rm", names[-1 - r]) for r in range(args.rounds)),
                "prune": statistics.median(run("prune") for _ in range(args.rounds)),
            }
        rows += [
            Row("client", f"{label}: list", size, timings["list"], timings["list"] / size * 1e6),
            Row("client", f"{label}: pull --locked, 1 present model", size, timings["one"], timings["one"] * 1e6),
            Row(
                "client",
                f"{label}: pull --locked, {args.locked_count:,} present models (all at 100)",
                size,
                timings["many"],
                timings["many"] / many * 1e6,
            ),
            Row("client", f"{label}: rm, 1 model", size, timings["rm"], timings["rm"] * 1e6),
            Row("client", f"{label}: prune", size, timings["prune"], timings["prune"] / size * 1e6),
        ]
    return rows


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "client": client_section,
    "registry": registry_section,
}


def table(rows: list[Row]) -> str:
    sizes = sorted({r.size for r in rows})
    measures = list(dict.fromkeys(r.measure for r in rows))
    by = {(r.measure, r.size): r for r in rows}
    head = " | ".join(f"{s:,}" for s in sizes)
    lines = [f"| measure | {head} | per item at {sizes[0]:,} / {sizes[-1]:,}, us |", "|---" * (len(sizes) + 2) + "|"]
    for measure in measures:
        cells = [f"{by[(measure, s)].seconds * 1000:.1f} ms" if (measure, s) in by else "" for s in sizes]
        per = [by[(measure, s)].per_item_us for s in (sizes[0], sizes[-1]) if (measure, s) in by]
        ratio = f"{per[0]:.1f} / {per[-1]:.1f}" if len(per) == 2 and per[0] is not None and per[-1] is not None else ""
        lines.append(f"| {measure} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append", help="default: all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--page", type=int, default=100, help="catalog page size (n=)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--locked-count", type=int, default=1000, help="client: models in the big locked pull")
    parser.add_argument("--source", type=Path, help="run the registry from this source tree (before/after)")
    parser.add_argument("--distribution", action="store_true", help="also time Debian's docker-registry")
    args = parser.parse_args()
    if args.source is not None:
        args.source = args.source.resolve()
    rows: list[Row] = []
    for name in args.section or sorted(SECTIONS):
        rows += SECTIONS[name](args)
    print(table(rows))


if __name__ == "__main__":
    main()
