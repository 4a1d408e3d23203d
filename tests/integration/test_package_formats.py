"""``package --format modelpack|image`` read by independent clients: oras-py and modelpack-client pull the ModelPack
artifact, skopeo + umoci unpack the image, containerd imports and mounts it; modelctl pulls and runs all three.

Every artifact goes through Debian's docker-registry over HTTP on a loopback port; the CLI runs as real processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import servers
from helpers.ggufs import tiny_llama
from helpers.servers import RegistryServer

EPOCH = "1700000000"
"""SOURCE_DATE_EPOCH for every package here: the files' mtime and the created time."""
SKOPEO, UMOCI = shutil.which("skopeo"), shutil.which("umoci")
CONTAINERD, CTR = shutil.which("containerd"), shutil.which("ctr")


def modelctl(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, MODELCTL_HOME=str(home), SOURCE_DATE_EPOCH=EPOCH, **env)
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=full, capture_output=True, text=True, timeout=300
    )


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Inputs:
    gguf: Path
    mmproj: Path
    license: Path
    template: Path

    def args(self) -> list[str]:
        return [
            "--gguf", str(self.gguf), "--mmproj", str(self.mmproj),
            "--license", str(self.license), "--chat-template", str(self.template),
        ]  # fmt: skip


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    src = tmp_path / "src"
    src.mkdir()
    (src / "LICENSE").write_text("Apache-2.0\n")
    (src / "template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    return Inputs(
        gguf=tiny_llama(src / "tiny.gguf"),
        mmproj=tiny_llama(src / "mmproj-tiny.gguf", seed=7),
        license=src / "LICENSE",
        template=src / "template.jinja",
    )


def publish(registry: RegistryServer, fmt: str, inputs: Inputs, home: Path, repo: str | None = None) -> str:
    ref = f"{registry.host}/{repo or 'formats/' + fmt}:v1"
    made = modelctl("package", "--format", fmt, *inputs.args(), "--push", ref, home=home)
    assert made.returncode == 0, made.stderr
    return ref


# -- modelpack ---------------------------------------------------------------------------------------------------


def test_modelpack_is_pulled_by_oras_by_title(docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path) -> None:
    import oras.client

    ref = publish(docker_registry, "modelpack", inputs, tmp_path / "publisher")
    out = tmp_path / "oras"
    client = oras.client.OrasClient(hostname=docker_registry.host, insecure=True)
    pulled = client.pull(target=ref, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == ["LICENSE", "mmproj-tiny.gguf", "template.jinja", "tiny.gguf"]
    for path in (inputs.gguf, inputs.mmproj, inputs.license, inputs.template):
        assert sha256(out / path.name) == sha256(path)
    manifest = client.get_manifest(ref)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.cncf.model.weight.v1.raw",
        "application/vnd.cncf.model.weight.config.v1.raw",
        "application/vnd.cncf.model.doc.v1.raw",
    }


def test_modelpack_is_pulled_by_modelpack_client(
    docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path
) -> None:
    """modelpack-client checks the config against ModelPack's JSON schema, each layer against its diffId, and
    applies the file-metadata annotation (mode, mtime) to what it writes."""
    from modelpack_client import ModelPackClient

    ref = publish(docker_registry, "modelpack", inputs, tmp_path / "publisher")
    out = tmp_path / "modelpack"
    result = ModelPackClient(insecure=True).pull(ref, out)
    assert sorted(p.name for p in result.files) == ["LICENSE", "mmproj-tiny.gguf", "template.jinja", "tiny.gguf"]
    for path in (inputs.gguf, inputs.mmproj, inputs.license, inputs.template):
        pulled = out / path.name
        assert sha256(pulled) == sha256(path)
        assert pulled.stat().st_mode & 0o777 == 0o644
        assert int(pulled.stat().st_mtime) == int(EPOCH)
    config = result.config
    assert config["config"]["format"] == "gguf"
    assert config["config"]["architecture"] == "llama"
    assert config["config"]["quantization"] == "F32"
    assert config["descriptor"]["createdAt"] == "2023-11-14T22:13:20Z"


# -- image -------------------------------------------------------------------------------------------------------


def skopeo_copy(tmp: Path, src: str, dest: str) -> None:
    """skopeo copies the registry's bytes as they are (``--preserve-digests``: no recompression)."""
    if SKOPEO is None:
        pytest.skip("skopeo is not installed (make setup installs it)")
    policy = tmp / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {**os.environ, "HOME": str(tmp), "XDG_RUNTIME_DIR": str(tmp)}
    args = ["--policy", str(policy), "copy", "--src-tls-verify=false", "--preserve-digests", src, dest]
    proc = subprocess.run([SKOPEO, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_image_is_unpacked_by_umoci(docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path) -> None:
    if UMOCI is None:
        pytest.skip("umoci is not installed (make setup installs it)")
    ref = publish(docker_registry, "image", inputs, tmp_path / "publisher")
    layout = tmp_path / "layout"
    skopeo_copy(tmp_path, f"docker://{ref}", f"oci:{layout}:v1")
    bundle = tmp_path / "bundle"
    proc = subprocess.run(
        [UMOCI, "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    models = bundle / "rootfs" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["LICENSE", "mmproj-tiny.gguf", "template.jinja", "tiny.gguf"]
    for path in (inputs.gguf, inputs.mmproj, inputs.license, inputs.template):
        unpacked = models / path.name
        assert unpacked.read_bytes() == path.read_bytes()
        assert unpacked.stat().st_mode & 0o777 == 0o644
        assert int(unpacked.stat().st_mtime) == int(EPOCH)


@dataclass
class Containerd:
    address: str
    namespace: str = "modelctl-test"

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert CTR is not None
        command = [CTR, "--address", self.address, "--namespace", self.namespace, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def import_archive(self, archive: Path, name: str) -> subprocess.CompletedProcess[str]:
        """``ctr images import`` of an OCI archive, unpacked into the native snapshotter (works on any file system)."""
        return self.ctr("images", "import", "--snapshotter", "native", "--base-name", name, str(archive))


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    """A private containerd daemon (its own root, state and socket in a temp dir; the CRI plugin off), stopped
    afterwards. Skipped, saying why, where containerd is missing or cannot start (it needs root)."""
    if CONTAINERD is None or CTR is None:
        pytest.skip("containerd is not installed (make setup installs Debian's containerd)")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root to mount snapshots; this test runs as a normal user")
    base = Path(tempfile.mkdtemp(prefix="ctd-"))  # short: a unix socket path has a 108-byte limit
    socket = base / "containerd.sock"
    (base / "config.toml").write_text(
        "\n".join([
            "version = 2",
            f'root = "{base}/root"',
            f'state = "{base}/state"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            f'[grpc]\naddress = "{socket}"',
            f'[ttrpc]\naddress = "{socket}.ttrpc"',
            '[debug]\naddress = ""',
            '[metrics]\naddress = ""',
            f'[plugins."io.containerd.internal.v1.opt"]\npath = "{base}/opt"',
        ])
    )  # fmt: skip
    log = (base / "containerd.log").open("wb")
    proc = subprocess.Popen([CONTAINERD, "--config", str(base / "config.toml")], stdout=log, stderr=log)
    daemon = Containerd(address=str(socket))
    try:
        deadline = time.monotonic() + 20
        while daemon.ctr("version").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"containerd did not start here: {(base / 'containerd.log').read_text()[-400:]}")
            time.sleep(0.1)
        yield daemon
    finally:
        servers.stop(proc, timeout=15)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mounted(daemon: Containerd, image: str, target: Path) -> Iterator[subprocess.CompletedProcess[str]]:
    target.mkdir()
    result = daemon.ctr("images", "mount", "--snapshotter", "native", image, str(target))
    try:
        yield result
    finally:
        daemon.ctr("images", "unmount", "--rm", str(target))
        if os.path.ismount(target):
            subprocess.run(["umount", str(target)], check=False)


def test_image_is_imported_and_mounted_by_containerd(
    docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path, containerd: Containerd
) -> None:
    ref = publish(docker_registry, "image", inputs, tmp_path / "publisher")
    archive = tmp_path / "image.tar"
    skopeo_copy(tmp_path, f"docker://{ref}", f"oci-archive:{archive}:v1")
    imported = containerd.import_archive(archive, "example.test/m")
    assert imported.returncode == 0, imported.stderr
    with mounted(containerd, "example.test/m:v1", tmp_path / "mnt") as result:
        assert result.returncode == 0, result.stderr
        models = tmp_path / "mnt" / "models"
        for path in (inputs.gguf, inputs.mmproj, inputs.license, inputs.template):
            assert (models / path.name).read_bytes() == path.read_bytes()


def test_docker_format_is_not_an_image_containerd_can_unpack(
    docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path, containerd: Containerd
) -> None:
    """Why ``--format image`` exists: the default artifact's layers are raw GGUF bytes, which containerd refuses
    to unpack (its config's diff_ids name the raw files, not tar layers)."""
    ref = publish(docker_registry, "docker", inputs, tmp_path / "publisher")
    archive = tmp_path / "docker.tar"
    skopeo_copy(tmp_path, f"docker://{ref}", f"oci-archive:{archive}:v1")
    imported = containerd.import_archive(archive, "example.test/d")
    assert imported.returncode != 0
    assert "application/vnd.docker.ai.gguf.v3" in imported.stderr


# -- modelctl reads all three ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker", "modelpack", "image"])
def test_modelctl_pulls_every_format(docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path, fmt: str) -> None:
    ref = publish(docker_registry, fmt, inputs, tmp_path / "publisher")
    user = tmp_path / "user"
    pulled = modelctl("pull", "--json", ref, home=user)
    assert pulled.returncode == 0, pulled.stderr
    (model,) = json.loads(pulled.stdout)["models"]
    (gguf,) = (Path(p) for p in model["files"])
    assert sha256(gguf) == sha256(inputs.gguf)
    files = {p.name: p for p in gguf.parent.iterdir() if not p.name.startswith(".")}
    assert sha256(files["LICENSE"]) == sha256(inputs.license)
    shown = modelctl("inspect", ref, home=user)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert (doc["format"], doc["architecture"], doc["quantization"]) == (fmt, "llama", "F32")
    again = modelctl("pull", "--json", ref, home=user)  # present: nothing fetched, nothing unpacked again
    assert again.returncode == 0, again.stderr
    assert gguf.stat().st_mtime_ns == Path(json.loads(again.stdout)["models"][0]["files"][0]).stat().st_mtime_ns


def test_pull_output_copies_the_file_out_of_an_image_layer(
    docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path
) -> None:
    """``pull --output DIR`` (the init-container route) puts the GGUF in DIR, not the tar layer that holds it."""
    ref = publish(docker_registry, "image", inputs, tmp_path / "publisher")
    out = tmp_path / "out"
    pulled = modelctl("pull", ref, "--output", str(out), home=tmp_path / "user")
    assert pulled.returncode == 0, pulled.stderr
    for path in (inputs.gguf, inputs.mmproj, inputs.license, inputs.template):
        assert sha256(out / path.name) == sha256(path)


def test_remote_fit_reads_the_gguf_inside_an_image_layer(
    docker_registry: RegistryServer, inputs: Inputs, tmp_path: Path
) -> None:
    """The fit check reads GGUF headers by ranges before any download; in an image they start after the tar
    headers, and the verdict is the same as for the raw layer of the docker format."""
    reports = {}
    for fmt in ("docker", "image"):
        ref = publish(docker_registry, fmt, inputs, tmp_path / "publisher")
        fit = modelctl("fit", ref, "--json", home=tmp_path / "user")
        assert fit.returncode == 0, fit.stderr
        reports[fmt] = json.loads(fit.stdout)
    assert reports["image"]["verdict"] == reports["docker"]["verdict"] == "fits"
    (image,), (docker,) = reports["image"]["devices"], reports["docker"]["devices"]
    assert image["buffers"] == docker["buffers"] and image["need"] == docker["need"]  # free RAM varies between runs
    listed = modelctl("list", home=tmp_path / "user")
    assert tmp_path.name not in listed.stdout and "formats/" not in listed.stdout  # nothing was pulled


def test_run_an_image_format_model(docker_registry: RegistryServer, smollm2_gguf: Path, tmp_path: Path) -> None:
    """SmolLM2 published as an image, run by a user who never had it: pull, unpack, answer."""
    ref = f"{docker_registry.host}/ai/smollm2-image:135M-Q4_1"
    made = modelctl("package", "--format", "image", "--gguf", str(smollm2_gguf), "--push", ref, home=tmp_path / "p")
    assert made.returncode == 0, made.stderr
    answer = modelctl(
        "run", ref, "What is the capital of France?", "--ctx-size", "1024", "--threads", "2",
        "--temperature", "0", "--system", "Answer in one short sentence.", home=tmp_path / "user",
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout
