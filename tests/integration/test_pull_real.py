"""`modelctl pull` end to end against Debian's docker-registry (distribution 2.8), through a byte-counting proxy.

Real server, real CLI processes: resume after kill -9, two concurrent pulls, auth, error exit codes, mirrors.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import pytest
from helpers.servers import free_port, serving
from helpers.token_server import Signer, TokenServer

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Registry:
    host: str
    proc: subprocess.Popen[bytes]
    auth: tuple[str, str] | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def docker_registry(
    tmp: Path, *, htpasswd: tuple[str, str] | None = None, token: TokenServer | None = None
) -> Iterator[Registry]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = (
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if htpasswd:
        hashed = bcrypt.hashpw(htpasswd[1].encode(), bcrypt.gensalt(rounds=4)).decode()
        (tmp / "htpasswd").write_text(f"{htpasswd[0]}:{hashed}\n")
        config += f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp / 'htpasswd'}\n"
    if token:
        config += (
            f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n    issuer: {token.issuer}\n"
            f"    rootcertbundle: {token.rootcertbundle}\n"
        )
    (tmp / "config.yml").write_text(config)
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")], stderr=subprocess.DEVNULL)
    reg = Registry(f"127.0.0.1:{port}", proc, htpasswd)
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{reg.host}/v2/", timeout=1).status_code in (200, 401):
                    break
            time.sleep(0.05)
        yield reg
    finally:
        reg.stop()


def push(
    reg: Registry,
    repo: str,
    tag: str,
    layers: list[bytes],
    *,
    layer_type: str = "application/vnd.docker.ai.gguf.v3",
    config_type: str = "application/vnd.docker.ai.model.config.v0.1+json",
    config_doc: dict[str, object] | None = None,
    manifest_type: str = MANIFEST,
    artifact_type: str | None = None,
    extra: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    annotate: bool = False,
    names: list[str] | None = None,
) -> str:
    """Push a model artifact over plain HTTP (independent of modelctl's client); Docker v0.1 by default."""
    client = httpx.Client(base_url=f"http://{reg.host}", auth=reg.auth, timeout=120)

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = client.post(f"/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        loc = httpx.URL(start.headers["Location"])
        done = client.put(str(loc.copy_merge_params({"digest": digest})), content=data)
        assert done.status_code == 201, done.text
        return {"digest": digest, "size": len(data)}

    descs: list[dict[str, object]] = []
    for i, data in enumerate(layers, start=1):
        desc: dict[str, object] = {"mediaType": layer_type, **blob(data)}
        if annotate or names:
            name = names[i - 1] if names else f"model-{i:05d}-of-{len(layers):05d}.gguf"
            desc["annotations"] = {"org.cncf.model.filepath": name}
        descs.append(desc)
    descs += [{"mediaType": kind, **blob(data)} for kind, data in extra]
    doc = config_doc or {
        "config": {"format": "gguf", "quantization": "Q4_1", "parameters": "135M", "architecture": "llama"},
        "descriptor": {"created": "2025-01-01T00:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [d["digest"] for d in descs]},
    }
    config = json.dumps(doc).encode()
    body: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, **blob(config)},
        "layers": descs,
    }
    if artifact_type:
        body["artifactType"] = artifact_type
    manifest = json.dumps(body).encode()
    put = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": manifest_type})
    assert put.status_code == 201, put.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def _span(range_header: str | None) -> int:
    """Bytes a ``Range: bytes=A-B`` asks for; none for a GET without a Range (small blobs: the config)."""
    if not range_header:
        return 0
    first, _, last = range_header.removeprefix("bytes=").partition("-")
    return int(last) - int(first) + 1 if last else 1 << 62


@dataclass
class Proxy:
    """A reverse proxy in front of a registry: counts blob bytes served, can fail or slow down on demand."""

    upstream: str
    port: int = field(default_factory=free_port)
    blob_bytes: int = 0
    part_bytes: int = 0
    """Blob bytes answering Range requests for 1 MiB or more: the download engine's parts of a large layer, not
    the fit check's header read (one 256 KiB window: the test blobs are not GGUF past their magic) nor the config,
    so "downloaded once" can be asserted to the byte."""
    fail_with: int | None = None
    delay_per_mib: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                if proxy.fail_with:
                    body = b'{"errors":[{"code":"UNKNOWN","message":"injected"}]}'
                    self.send_response(proxy.fail_with)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                is_blob = "/blobs/" in self.path and self.command == "GET"
                is_part = is_blob and _span(self.headers.get("Range")) >= 1 << 20
                try:
                    while chunk := resp.read(1 << 20):
                        self.wfile.write(chunk)
                        if is_blob:
                            with proxy.lock:
                                proxy.blob_bytes += len(chunk)
                                proxy.part_bytes += len(chunk) if is_part else 0
                            if proxy.delay_per_mib:
                                time.sleep(proxy.delay_per_mib * len(chunk) / (1 << 20))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                conn.close()

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[Proxy]:
        with serving(self.handler(), port=self.port):
            yield self


def modelctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("modelctl: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def home() -> Path:
    return Path(os.environ["MODELCTL_HOME"])


def store_is_consistent() -> None:
    store = home() / "store"
    json.loads((store / "index.json").read_text())
    for blob in (store / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"{blob} is not what its name says"


def test_pull_smollm2_then_offline(tmp_path: Path, smollm2_gguf: Path) -> None:
    data = smollm2_gguf.read_bytes()
    with docker_registry(tmp_path / "reg") as reg, Proxy(reg.host).running() as proxy:
        digest = push(reg, "ai/smollm2", "135M-Q4_1", [data])
        ref = f"{proxy.host}/ai/smollm2:135M-Q4_1"
        first = modelctl("pull", "--json", ref)
        assert first.returncode == 0, first.stderr
        doc = json.loads(first.stdout)["models"][0]
        assert doc["digest"] == digest and doc["reference"] == ref
        assert hashlib.sha256(Path(doc["files"][0]).read_bytes()).digest() == hashlib.sha256(data).digest()
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{home() / 'store'}:{ref}"], capture_output=True, check=True
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
        listed = json.loads(modelctl("list", "--json").stdout)
        assert [m["quantization"] for m in listed] == ["Q4_1"]
        before = proxy.blob_bytes
        assert modelctl("pull", "-q", ref).stdout.strip() == digest
        assert proxy.blob_bytes == before, "a second pull fetches no blob again (config included)"
    # registry and proxy are gone: a present model is used without any network
    offline = modelctl("path", ref)
    assert offline.returncode == 0 and Path(offline.stdout.strip()).is_file()


def test_kill_9_then_resume_fetches_little_twice(tmp_path: Path) -> None:
    size = 256 << 20
    block = os.urandom(1 << 20)
    data = b"GGUF" + b"".join(i.to_bytes(4, "little") + block[4:] for i in range(size >> 20))[4:]
    with docker_registry(tmp_path / "reg") as reg, Proxy(reg.host, delay_per_mib=0.02).running() as proxy:
        push(reg, "ai/big", "1", [data])
        ref = f"{proxy.host}/ai/big:1"
        env = dict(os.environ, MODELCTL_PARTS="4")
        proc = subprocess.Popen([sys.executable, "-m", "modelctl", "pull", "-q", ref], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        progressed = 0
        while time.monotonic() < deadline and progressed < size * 0.3:
            for state in (home() / "ingest").glob("*/state.json"):
                with contextlib.suppress(OSError, ValueError):
                    progressed = sum(p[2] for p in json.loads(state.read_text())["parts"])
            time.sleep(0.05)
        assert progressed >= size * 0.3, "the pull never got going"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        index = json.loads((home() / "store" / "index.json").read_text())
        assert index["manifests"] == []
        store_is_consistent()
        proxy.delay_per_mib = 0.0
        resumed = modelctl("pull", "-q", ref, MODELCTL_PARTS="4")
        assert resumed.returncode == 0, resumed.stderr
        assert proxy.blob_bytes < 1.5 * size, f"fetched {proxy.blob_bytes / size:.2f}x the blob"
        store_is_consistent()


def test_a_blob_a_crash_damaged_is_found_after_the_reboot_and_pulled_again(tmp_path: Path) -> None:
    """Pulls commit blobs without waiting for the disk. Simulate what a power cut can leave: the journal's entry
    from the previous boot and a page of the blob that never reached the disk (zeros, same size)."""
    data = b"GGUF" + os.urandom(8 << 20)
    layer = "sha256:" + hashlib.sha256(data).hexdigest()
    with docker_registry(tmp_path / "reg") as reg, Proxy(reg.host).running() as proxy:
        push(reg, "ai/crash", "1", [data])
        ref = f"{proxy.host}/ai/crash:1"
        assert modelctl("pull", "-q", ref).returncode == 0
        store = home() / "store"
        journal = store / ".unflushed.json"
        entries = json.loads(journal.read_text())["blobs"]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert {e["digest"] for e in entries} >= {layer} and {e["boot"] for e in entries} == {boot}

        for e in entries:
            e["boot"] = "the-boot-before-the-power-cut"
        journal.write_text(json.dumps({"blobs": entries}))
        blob = store / "blobs" / "sha256" / layer.removeprefix("sha256:")
        with blob.open("r+b") as f:
            f.seek(4 << 20)
            f.write(b"\0" * 4096)

        listed = modelctl("list", "--json")  # the first command after the "reboot" re-verifies
        assert listed.returncode == 0, listed.stderr
        assert not blob.exists() and not journal.exists()
        store_is_consistent()

        before = proxy.blob_bytes
        again = modelctl("pull", "-q", ref)
        assert again.returncode == 0, again.stderr
        assert proxy.blob_bytes - before >= len(data), "the damaged layer is fetched again"
        assert hashlib.sha256(blob.read_bytes()).digest() == hashlib.sha256(data).digest()
        store_is_consistent()


def test_two_concurrent_pulls_fetch_once(tmp_path: Path) -> None:
    data = b"GGUF" + os.urandom(64 << 20)
    with docker_registry(tmp_path / "reg") as reg, Proxy(reg.host).running() as proxy:
        push(reg, "ai/pair", "1", [data])
        ref = f"{proxy.host}/ai/pair:1"
        procs = [subprocess.Popen([sys.executable, "-m", "modelctl", "pull", "-q", ref]) for _ in range(2)]
        assert [p.wait(120) for p in procs] == [0, 0]
        assert proxy.part_bytes == len(data), "the blob is downloaded once, to the byte"
        store_is_consistent()


def test_credentials_from_docker_config_and_wrong_password(tmp_path: Path) -> None:
    with docker_registry(tmp_path / "reg", htpasswd=("alice", "s3cret-pw")) as reg:
        push(reg, "ai/private", "1", [b"GGUF private"])
        ref = f"{reg.host}/ai/private:1"
        config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"auths": {reg.host: {"auth": "YWxpY2U6d3Jvbmc="}}}))  # alice:wrong
        denied = modelctl("pull", ref)
        one_line_error(denied, 4)
        assert "wrong" not in denied.stderr
        login = subprocess.run(
            [sys.executable, "-m", "modelctl", "login", reg.host, "-u", "alice", "--password-stdin"],
            input="s3cret-pw\n",
            capture_output=True,
            text=True,
        )
        assert login.returncode == 0, login.stderr
        assert "s3cret-pw" not in login.stderr + login.stdout
        assert modelctl("pull", ref).returncode == 0


def test_token_auth_with_cached_tokens(tmp_path: Path, token_signer: Signer) -> None:
    with TokenServer(token_signer, {"bob": "pw"}) as token, docker_registry(tmp_path / "reg", token=token) as reg:
        client = httpx.Client(timeout=30)
        scope = "repository:ai/tok:pull,push"
        bearer = client.get(token.realm, params={"service": token.service, "scope": scope}, auth=("bob", "pw")).json()
        reg.auth = None
        headers = {"Authorization": f"Bearer {bearer['token']}"}
        push_with_headers = httpx.Client(base_url=f"http://{reg.host}", headers=headers, timeout=60)
        data = b"GGUF token"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = push_with_headers.post("/v2/ai/tok/blobs/uploads/")
        assert start.status_code == 202, start.text
        loc = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})
        assert push_with_headers.put(str(loc), content=data).status_code == 201
        config = b'{"config":{"format":"gguf"},"rootfs":{"type":"rootfs","diff_ids":[]}}'
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        start = push_with_headers.post("/v2/ai/tok/blobs/uploads/")
        loc = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": cdigest})
        assert push_with_headers.put(str(loc), content=config).status_code == 201
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                    "digest": cdigest,
                    "size": len(config),
                },
                "layers": [{"mediaType": "application/vnd.docker.ai.gguf.v3", "digest": digest, "size": len(data)}],
            }
        ).encode()
        put = push_with_headers.put("/v2/ai/tok/manifests/1", content=manifest, headers={"Content-Type": MANIFEST})
        assert put.status_code == 201, put.text
        before = len(token.requests)
        anonymous = modelctl("pull", f"{reg.host}/ai/tok:1")
        assert anonymous.returncode == 0, anonymous.stderr  # our token server grants anonymous pulls
        assert len(token.requests) - before <= 2, "one token per scope, reused for manifest, config and blobs"
        config_json = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
        config_json.parent.mkdir(parents=True, exist_ok=True)
        config_json.write_text(json.dumps({"auths": {reg.host: {"auth": "Ym9iOm5vcGU="}}}))  # bob:nope
        one_line_error(modelctl("pull", f"{reg.host}/ai/tok:1"), 4)


def test_error_exit_codes(tmp_path: Path) -> None:
    with docker_registry(tmp_path / "reg") as reg, Proxy(reg.host).running() as proxy:
        one_line_error(modelctl("pull", f"{proxy.host}/ai/absent:1"), 3)
        proxy.fail_with = 500
        one_line_error(modelctl("pull", f"{proxy.host}/ai/absent:1", MODELCTL_RETRIES="1"), 7)
    one_line_error(modelctl("pull", f"127.0.0.1:{free_port()}/ai/x:1", MODELCTL_RETRIES="0"), 7)


def test_mirror_serves_docker_hub_names(tmp_path: Path) -> None:
    with docker_registry(tmp_path / "reg") as reg:
        digest = push(reg, "ai/smollm2", "135M-Q4_1", [b"GGUF mirrored"])
        result = modelctl("pull", "-q", "ai/smollm2:135M-Q4_1", MODELCTL_MIRRORS=f"docker.io=http://{reg.host}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == digest
        listed = json.loads(modelctl("list", "--json").stdout)
        assert listed[0]["reference"] == "docker.io/ai/smollm2:135M-Q4_1"


def test_sharded_modelpack_and_ollama_artifacts(tmp_path: Path) -> None:
    shards = [b"GGUF shard %d" % i for i in range(3)]
    with docker_registry(tmp_path / "reg") as reg:
        order = [2, 0, 1]  # layers out of shard order; the file names carry the shard numbers
        names = [f"m-{i + 1:05d}-of-00003.gguf" for i in order]
        push(reg, "ai/sharded", "1", [shards[i] for i in order], names=names)
        push(
            reg,
            "ai/pack",
            "1",
            [b"GGUF packed"],
            layer_type="application/vnd.cncf.model.weight.v1.raw",
            config_type="application/vnd.cncf.model.config.v1+json",
            artifact_type="application/vnd.cncf.model.manifest.v1+json",
            config_doc={
                "descriptor": {"createdAt": "2025-01-01T00:00:00Z"},
                "config": {"format": "gguf", "paramSize": "135M", "quantization": "Q4_1", "architecture": "llama"},
                "modelfs": {"type": "layers", "diffIds": []},
            },
            annotate=True,
        )
        push(
            reg,
            "library/olla",
            "1",
            [b"GGUF ollama"],
            layer_type="application/vnd.ollama.image.model",
            config_type="application/vnd.docker.container.image.v1+json",
            manifest_type="application/vnd.docker.distribution.manifest.v2+json",
            config_doc={"model_format": "gguf", "model_family": "llama", "model_type": "8.0B", "file_type": "Q4_0"},
            extra=[("application/vnd.ollama.image.template", b"{{ .Prompt }}")],
        )
        result = modelctl(
            "pull", "--json", f"{reg.host}/ai/sharded:1", f"{reg.host}/ai/pack:1", f"{reg.host}/library/olla:1"
        )
        assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)["models"]
    files = [Path(f) for f in models[0]["files"]]
    assert [f.name for f in files] == [f"model-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    # shard order comes from the shard numbers in the file names, not from the layer order
    assert [f.read_bytes() for f in files] == shards
    assert Path(models[1]["files"][0]).read_bytes() == b"GGUF packed"
    assert Path(models[2]["files"][0]).read_bytes() == b"GGUF ollama"
    listed = {m["reference"].split("/", 1)[1]: m for m in json.loads(modelctl("list", "--json").stdout)}
    assert listed["library/olla:1"]["quantization"] == "Q4_0" and listed["library/olla:1"]["format"] == "ollama"
    assert listed["ai/pack:1"]["format"] == "modelpack"


@pytest.mark.parametrize("bad", ["ai/x:-bad", "https://x/y"])
def test_invalid_reference(bad: str) -> None:
    one_line_error(modelctl("pull", bad), 2)
