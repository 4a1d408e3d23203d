"""``modelctl pull hf.co/<org>/<repo>[:QUANT]`` end to end: the real CLI (subprocess) against a real HTTP server
speaking the Hub's API (tests/integration/hub_server.py), with real GGUF files."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.ggufs import LlamaShape, sha256_file, tiny_llama, tiny_llama_split
from hub_server import HubRepo, HubServer, hub_server


def home() -> Path:
    return Path(os.environ["MODELCTL_HOME"])


TOKEN = "hf_Secret0123456789abcdefTOKEN"
SMOL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hf-ggufs")
    shape = LlamaShape(n_layer=3)
    out = {
        "q4km": tiny_llama(d / "q4km.gguf", seed=1, name="tiny-q4km"),
        "q8": tiny_llama(d / "q8.gguf", seed=2, name="tiny-q8"),
        "q2k": tiny_llama(d / "q2k.gguf", seed=3, name="tiny-q2k"),
        "mmproj": tiny_llama(d / "mmproj.gguf", seed=4, name="tiny-mmproj"),
    }
    for i, p in enumerate(tiny_llama_split(d / "split", 3, prefix="Tiny-Q4_K_M", shape=shape, seed=5), start=1):
        out[f"shard{i}"] = p
    return out


@pytest.fixture()
def hub(ggufs: dict[str, Path], smollm2_gguf: Path) -> Iterator[HubServer]:
    repos = {
        "acme/Smol-GGUF": HubRepo(
            files={
                f"{SMOL}-Q4_K_M.gguf": ggufs["q4km"],
                f"{SMOL}-Q8_0.gguf": ggufs["q8"],
                f"{SMOL}-Q4_1.gguf": smollm2_gguf,
                "mmproj-Smol-f16.gguf": ggufs["mmproj"],
                "README.md": b"# Smol\n",
            }
        ),
        "acme/Fallback-GGUF": HubRepo(
            files={
                f"{SMOL}-Q8_0.gguf": ggufs["q8"],
                f"{SMOL}-Q4_1.gguf": smollm2_gguf,
                f"{SMOL}-Q2_K.gguf": ggufs["q2k"],
            }
        ),
        "acme/Split-GGUF": HubRepo(
            files={
                **{f"Q4_K_M/Tiny-Q4_K_M-0000{i}-of-00003.gguf": ggufs[f"shard{i}"] for i in (3, 1, 2)},
                "Tiny-Q8_0.gguf": ggufs["q8"],
            }
        ),
        "acme/Bad-GGUF": HubRepo(
            files={"Bad-Q4_K_M.gguf": ggufs["q4km"], "Bad-Q8_0.gguf": ggufs["q8"]},
            wrong_sha=frozenset({"Bad-Q4_K_M.gguf"}),
        ),
        "acme/Private-GGUF": HubRepo(files={"Private-Q4_K_M.gguf": ggufs["q4km"]}, token=TOKEN),
        "acme/Evil-GGUF": HubRepo(
            files={"Evil-Q4_K_M.gguf": ggufs["q4km"]},
            listed_sha={"Evil-Q4_K_M.gguf": "../../../../evil-" + "0" * 50},
        ),
    }
    with hub_server(repos) as server:
        yield server


def cli_env(hub: HubServer | None, token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_ENDPOINT"] = hub.url if hub else "http://127.0.0.1:9"  # port 9: nothing listens there
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HOME"] = str(home().parent / "hf-home")  # no token or cache of the user's leaks in
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def modelctl(hub: HubServer | None, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    modelctl_bin = Path(sys.executable).parent / "modelctl"
    return subprocess.run(
        [str(modelctl_bin), *args], env=cli_env(hub, token), capture_output=True, text=True, timeout=300
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def pull_json(hub: HubServer, ref: str, **kw: str) -> dict[str, object]:
    doc = json.loads(ok(modelctl(hub, "pull", "--json", ref, **kw)).stdout)
    [model] = doc["models"]
    assert isinstance(model, dict)
    return model


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line (progress lines may come before it); no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("modelctl: error:")]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def listed() -> list[dict[str, object]]:
    return list(json.loads(ok(modelctl(None, "list", "--json")).stdout))


def test_default_quant_is_q4_k_m_with_mmproj(hub: HubServer, ggufs: dict[str, Path]) -> None:
    model = pull_json(hub, "hf.co/acme/Smol-GGUF")
    assert model["reference"] == "hf.co/acme/Smol-GGUF:Q4_K_M"
    files = [Path(str(p)) for p in model["files"]]  # type: ignore[attr-defined]
    assert len(files) == 1 and sha256_file(files[0]) == sha256_file(ggufs["q4km"])
    names = {m["reference"] for m in listed()}
    assert names == {"hf.co/acme/Smol-GGUF:Q4_K_M", "hf.co/acme/Smol-GGUF:latest"}
    doc = json.loads(ok(modelctl(None, "inspect", "--json", "hf.co/acme/Smol-GGUF:Q4_K_M")).stdout)
    layers = doc["manifest"]["layers"]
    assert [x["mediaType"] for x in layers] == ["application/vnd.docker.ai.gguf.v3", "application/vnd.docker.ai.mmproj"]
    assert layers[1]["digest"] == sha256_file(ggufs["mmproj"])
    assert layers[1]["annotations"]["org.cncf.model.filepath"] == "mmproj-Smol-f16.gguf"
    assert doc["config"]["config"]["format"] == "gguf"
    assert doc["config"]["descriptor"]["created"] == "2024-11-20T10:00:00Z"
    assert not any("Q8_0" in r.path or "Q4_1" in r.path for r in hub.downloads()), "only the chosen files are fetched"


def test_explicit_quant_then_run_path_list_rm_offline(hub: HubServer, smollm2_gguf: Path) -> None:
    model = pull_json(hub, "hf.co/acme/Smol-GGUF:q4_1")
    assert model["reference"] == "hf.co/acme/Smol-GGUF:Q4_1"
    # everything below runs with HF_ENDPOINT pointing at a closed port: a present model needs no network
    path = Path(ok(modelctl(None, "path", "hf.co/acme/Smol-GGUF:Q4_1")).stdout.strip())
    assert sha256_file(path) == sha256_file(smollm2_gguf)
    [row] = listed()
    assert row["reference"] == "hf.co/acme/Smol-GGUF:Q4_1" and row["quantization"] == "Q4_1"
    assert row["architecture"] == "llama"
    fit = json.loads(ok(modelctl(None, "fit", "--json", "hf.co/acme/Smol-GGUF:Q4_1")).stdout)
    assert fit["bytes_fetched"] == 0
    again = modelctl(None, "pull", "hf.co/acme/Smol-GGUF:Q4_1")
    assert again.returncode == 0 and "using the local copy" in again.stderr
    ok(modelctl(None, "rm", "hf.co/acme/Smol-GGUF:Q4_1"))
    assert listed() == []


def test_explicit_quant_missing_is_not_found(hub: HubServer) -> None:
    proc = modelctl(hub, "pull", "hf.co/acme/Smol-GGUF:IQ2_XXS")
    assert proc.returncode == 3
    assert "available quantisations: Q8_0, Q4_1, Q4_K_M" in error_line(proc)


def test_closest_quant_fallback(hub: HubServer, smollm2_gguf: Path) -> None:
    model = pull_json(hub, "hf.co/acme/Fallback-GGUF")
    assert model["reference"] == "hf.co/acme/Fallback-GGUF:Q4_1"  # 5.0 bpw is the closest to Q4_K_M's 4.89
    [file] = model["files"]  # type: ignore[misc]
    assert sha256_file(Path(file)) == sha256_file(smollm2_gguf)
    # the bare reference now resolves locally, with no network
    assert Path(ok(modelctl(None, "path", "hf.co/acme/Fallback-GGUF")).stdout.strip()).name == "model.gguf"


def test_split_model_all_shards_in_order(hub: HubServer, ggufs: dict[str, Path]) -> None:
    model = pull_json(hub, "hf.co/acme/Split-GGUF")
    assert model["reference"] == "hf.co/acme/Split-GGUF:Q4_K_M"
    files = [Path(str(p)) for p in model["files"]]  # type: ignore[attr-defined]
    assert [p.name for p in files] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [sha256_file(p) for p in files] == [sha256_file(ggufs[f"shard{i}"]) for i in (1, 2, 3)]
    fit = json.loads(ok(modelctl(None, "fit", "--json", "hf.co/acme/Split-GGUF:Q4_K_M")).stdout)
    assert fit["memory"]["weights"] > 0


def test_sha_mismatch_is_refused_and_nothing_tagged(hub: HubServer, ggufs: dict[str, Path]) -> None:
    proc = modelctl(hub, "pull", "hf.co/acme/Bad-GGUF")
    assert proc.returncode == 5, proc.stderr
    assert "digest mismatch" in error_line(proc)
    assert listed() == []
    blobs = home() / "store" / "blobs" / "sha256"
    assert not (blobs / sha256_file(ggufs["q4km"]).removeprefix("sha256:")).exists()
    index = json.loads((home() / "store" / "index.json").read_text())
    assert index["manifests"] == []
    ok(modelctl(hub, "pull", "hf.co/acme/Bad-GGUF:Q8_0"))  # the store still works; the good file pulls


def test_a_malformed_listed_sha256_is_refused_before_any_download(hub: HubServer) -> None:
    # the sha256 names files under ingest/ and blobs/: a hostile listing must not steer a path
    proc = modelctl(hub, "pull", "hf.co/acme/Evil-GGUF")
    assert proc.returncode == 5, proc.stderr
    assert "malformed sha256" in error_line(proc)
    assert not any(r.path.endswith(".gguf") for r in hub.downloads())
    assert listed() == []


def test_token_required(hub: HubServer) -> None:
    for token in (None, "hf_wrongWRONGwrong0000"):
        proc = modelctl(hub, "pull", "hf.co/acme/Private-GGUF", token=token)
        assert proc.returncode == 4, proc.stderr
        assert "HF_TOKEN" in error_line(proc)
        if token:
            assert token not in proc.stdout + proc.stderr
    hub.requests.clear()
    proc = ok(modelctl(hub, "pull", "hf.co/acme/Private-GGUF", token=TOKEN))
    assert TOKEN not in proc.stdout + proc.stderr
    assert hub.downloads(), "the file came through the CDN redirect"
    assert all(r.authorization for r in hub.requests if not r.path.startswith("/cdn/"))
    assert not any(r.authorization for r in hub.requests if r.path.startswith("/cdn/")), "no token sent to the CDN"


def test_unknown_repo_is_not_found(hub: HubServer) -> None:
    proc = modelctl(hub, "pull", "hf.co/acme/Nope-GGUF")
    assert proc.returncode == 3, proc.stderr
    assert "hf.co/acme/Nope-GGUF" in error_line(proc)


def test_unreachable_hub_is_exit_7() -> None:
    proc = modelctl(None, "pull", "hf.co/acme/Smol-GGUF")
    assert proc.returncode == 7, proc.stderr
    assert "cannot reach the Hugging Face Hub" in error_line(proc)


def test_second_pull_fetches_nothing(hub: HubServer) -> None:
    files = hub.repos["acme/Split-GGUF"].files
    shards = [path for path in files if path.startswith("Q4_K_M/")]  # the default quantisation, split in three
    ok(modelctl(hub, "fit", "--remote", "hf.co/acme/Split-GGUF"))  # what the fit check reads of each shard
    headers = {path: hub.bytes_sent_for("acme/Split-GGUF", path) for path in shards}
    hub.requests.clear()
    first = pull_json(hub, "hf.co/acme/Split-GGUF")
    assert len(shards) == 3 and {r.range is not None for r in hub.downloads()} == {True}
    for path in shards:  # each shard fetched once (ranged parts), plus the pre-download fit check's header reads
        size = Path(files[path]).stat().st_size
        assert hub.bytes_sent_for("acme/Split-GGUF", path) == size + headers[path], path
    assert hub.bytes_sent_for("acme/Split-GGUF", "Tiny-Q8_0.gguf") == 0
    hub.requests.clear()
    second = pull_json(hub, "hf.co/acme/Split-GGUF")
    assert hub.downloads() == [], "no file content is fetched again (not even a header)"
    assert second["digest"] == first["digest"], "an unchanged repository gives the same manifest"


def test_a_present_model_costs_the_listing_alone(hub: HubServer) -> None:
    """The second pull asks the Hub for the listing and nothing else, and tags the manifest it wrote the first time;
    once the repository changes (a README edit moves its last-modified time), the pull writes a new manifest, still
    without fetching a file."""
    first = pull_json(hub, "hf.co/acme/Smol-GGUF:Q4_1")
    hub.requests.clear()
    second = pull_json(hub, "hf.co/acme/Smol-GGUF:Q4_1")
    assert [(r.method, r.path) for r in hub.requests] == [("GET", "/api/models/acme/Smol-GGUF")]
    assert second == first
    hub.repos["acme/Smol-GGUF"].last_modified = "2025-01-02T03:04:05.000Z"
    third = pull_json(hub, "hf.co/acme/Smol-GGUF:Q4_1")
    assert third["digest"] != first["digest"]
    assert os.path.samefile(third["files"][0], first["files"][0])  # type: ignore[index]  # the same stored blob
    assert hub.downloads() == []


def test_inspect_and_fit_remote_before_download(hub: HubServer, smollm2_gguf: Path) -> None:
    doc = json.loads(ok(modelctl(hub, "inspect", "--remote", "hf.co/acme/Smol-GGUF:Q4_1")).stdout)
    assert doc["reference"] == "hf.co/acme/Smol-GGUF:Q4_1"
    assert doc["quantization"] == "Q4_1"
    assert [f["path"] for f in doc["files"]] == [f"{SMOL}-Q4_1.gguf", "mmproj-Smol-f16.gguf"]
    assert doc["files"][0]["size"] == smollm2_gguf.stat().st_size
    assert doc["files"][0]["digest"] == sha256_file(smollm2_gguf)
    assert doc["available"] == ["Q8_0", "Q4_1", "Q4_K_M"]
    assert hub.downloads() == []
    fit = json.loads(ok(modelctl(hub, "fit", "--remote", "--json", "hf.co/acme/Smol-GGUF:Q4_1")).stdout)
    assert fit["reference"] == "hf.co/acme/Smol-GGUF:Q4_1"
    assert 0 < fit["bytes_fetched"] < 4 << 20
    assert all(r.range for r in hub.downloads())
    assert hub.bytes_sent() < 8 << 20, "only the header was read"
    assert listed() == []
    split = json.loads(ok(modelctl(hub, "fit", "--remote", "--json", "hf.co/acme/Split-GGUF")).stdout)
    assert split["reference"] == "hf.co/acme/Split-GGUF:Q4_K_M"


# --- interrupted and concurrent pulls of a large file, from a throttled Hub --------------------------------------

BIG_REPO = "acme/Big-GGUF"
BIG_FILE = f"{SMOL}-Q4_1.gguf"
BIG_REF = f"hf.co/{BIG_REPO}:Q4_1"
SLOW = 4 << 20
"""Bytes per second per request while a test needs a download in flight: the ~94 MiB SmolLM2 file takes ~25 s."""


@pytest.fixture()
def big_hub(smollm2_gguf: Path) -> Iterator[HubServer]:
    """A Hub with one real >= 64 MiB GGUF (SmolLM2-135M Q4_1) and nothing else to fetch (no mmproj)."""
    assert smollm2_gguf.stat().st_size >= 64 << 20
    with hub_server({BIG_REPO: HubRepo(files={BIG_FILE: smollm2_gguf})}) as server:
        yield server


_runs = itertools.count()


@dataclass
class Background:
    """``modelctl`` as :func:`modelctl` runs it, but in the background; its output goes to files (a pipe nobody
    reads could fill and stall it)."""

    proc: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(cls, hub: HubServer, *args: str) -> Background:
        out = home().parent / f"modelctl-{next(_runs)}.out"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "modelctl"), *args],
                env=cli_env(hub),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, out)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_for(what: str, condition: Callable[[], bool], runs: Sequence[Background]) -> None:
    """Poll until ``condition()``; fail if a process ended first (the test's timeout bounds the wait)."""
    while not condition():
        for run in runs:
            if run.proc.poll() is not None:
                pytest.fail(f"modelctl exited {run.proc.returncode} before {what}:\n{run.output()}")
        time.sleep(0.05)


def the_stored_file(expected: Path) -> None:
    """The store has the model once, tagged, with the right bytes, and every blob is what its name says."""
    [row] = listed()
    assert row["reference"] == BIG_REF
    path = Path(ok(modelctl(None, "path", BIG_REF)).stdout.strip())
    assert sha256_file(path) == sha256_file(expected)
    blobs = home() / "store" / "blobs" / "sha256"
    big = [b for b in blobs.iterdir() if b.stat().st_size >= 1 << 20]
    assert [f"sha256:{b.name}" for b in big] == [sha256_file(expected)], "the model's file is stored once"
    for blob in blobs.iterdir():
        assert sha256_file(blob) == f"sha256:{blob.name}", f"{blob} is not what its name says"


@pytest.mark.timeout(300)
def test_kill_9_then_pull_again_resumes(big_hub: HubServer, smollm2_gguf: Path) -> None:
    size = smollm2_gguf.stat().st_size
    big_hub.rate_bytes_per_s = SLOW
    run = Background.start(big_hub, "pull", BIG_REF)
    try:
        # Past half the file: a pull that started over would then need more than 1.5x the file in all.
        wait_for("60% was sent", lambda: big_hub.bytes_sent_for(BIG_REPO, BIG_FILE) >= 0.6 * size, [run])
    finally:
        run.stop()  # SIGKILL: no handler runs, nothing is cleaned up
    assert run.proc.returncode == -signal.SIGKILL, run.output()
    first = big_hub.bytes_sent_for(BIG_REPO, BIG_FILE)
    assert first < size, "the first pull was killed mid-download"
    assert listed() == [], "nothing is tagged by a killed pull"
    big_hub.rate_bytes_per_s = None
    ok(modelctl(big_hub, "pull", BIG_REF))
    the_stored_file(smollm2_gguf)
    total = big_hub.bytes_sent_for(BIG_REPO, BIG_FILE)
    print(f"kill -9 resume: {first / size:.2f}x sent before the kill, {total / size:.2f}x in all")
    assert total < 1.5 * size, f"the Hub sent {total / size:.2f}x the file: the partial was not resumed"


@pytest.mark.timeout(300)
def test_two_concurrent_pulls_download_once(big_hub: HubServer, smollm2_gguf: Path) -> None:
    size = smollm2_gguf.stat().st_size
    ok(modelctl(big_hub, "fit", "--remote", BIG_REF))  # what one fit check reads of the file, to the byte
    header = big_hub.bytes_sent_for(BIG_REPO, BIG_FILE)
    assert 0 < header < size and big_hub.header_checks_for(BIG_REPO, BIG_FILE) == 1
    big_hub.requests.clear()
    big_hub.rate_bytes_per_s = SLOW
    runs = [Background.start(big_hub, "pull", BIG_REF) for _ in range(2)]
    try:
        # Both have listed the repository, so both found the file missing, while the first download is still slow.
        listing = f"/api/models/{BIG_REPO}"
        wait_for("both listed the repository", lambda: sum(r.path == listing for r in big_hub.requests) >= 2, runs)
        assert big_hub.bytes_sent_for(BIG_REPO, BIG_FILE) < size, "the pulls overlap"
        big_hub.rate_bytes_per_s = None
        codes = [run.proc.wait() for run in runs]
    finally:
        for run in runs:
            run.stop()
    assert codes == [0, 0], [run.output() for run in runs]
    the_stored_file(smollm2_gguf)
    total = big_hub.bytes_sent_for(BIG_REPO, BIG_FILE)
    print(f"two concurrent pulls: {total / size:.2f}x the file sent")
    checks = big_hub.header_checks_for(BIG_REPO, BIG_FILE)  # each pull's pre-download fit check, if it ran one
    assert 1 <= checks <= 2
    assert total == size + checks * header, f"the Hub sent {total / size:.2f}x the file: both pulls downloaded it"
