"""``modelctl card`` and ``modelctl search`` as real processes: bundled cards, a card attached in the local store,
a card attached in our registry, the cards inside the wheel, and a fast ``list`` that loads no YAML."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import servers

REPO = Path(__file__).resolve().parents[2]


def modelctl(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, MODELCTL_HOME=str(home), MODELCTL_RETRIES="0", COLUMNS="120", **env)
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=full, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """``modelctl registry serve`` on a free port; yields host:port."""
    proc, url, _ = servers.start_ours(tmp_path / "reg", via=("-m", "modelctl", "registry", "serve"))
    try:
        yield url.removeprefix("http://")
    finally:
        servers.stop(proc)


CUSTOM = """---
repository: ai/smollm2
title: My SmolLM2 build
provider: Us
architecture: llama
license: {name: Apache-2.0, url: https://www.apache.org/licenses/LICENSE-2.0}
languages: [English]
capabilities: {tool_calling: false, modalities: [text]}
shape:
  135M: {n_layer: 30, n_embd: 576, n_head: 9, n_head_kv: 3, n_ff: 1536, n_vocab: 49152, context_length: 8192,
         tied_embeddings: true}
variants:
  - {tag: 135M-Q4_1, parameters: 135M, quantization: Q4_1, context_window: 8192, latest: true}
---
Packaged by us, with love.
"""


def test_card_from_the_bundled_cards(tmp_path: Path) -> None:
    home = tmp_path / "home"
    as_json = modelctl("card", "ai/llama3.1", "--offline", "--json", home=home)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["repository"] == "ai/llama3.1" and doc["card_source"]["kind"] == "bundled"
    assert [v["tag"] for v in doc["variants"] if v["latest"]] == ["8B-Q4_K_M"]

    raw = modelctl("card", "llama3.1", "--offline", "--raw", home=home)  # a bare name gets the ai/ namespace
    assert raw.returncode == 0 and raw.stdout == (REPO / "cards" / "ai" / "llama3.1.md").read_text()

    shown = modelctl("card", "ai/llama3.1:70B-Q4_K_M", "--offline", home=home)
    assert shown.returncode == 0, shown.stderr
    assert "Llama 3.1" in shown.stdout and "70B-Q4_K_M" in shown.stdout and "---\nrepository" not in shown.stdout

    missing = modelctl("card", "ai/no-such-model", "--offline", home=home)
    assert missing.returncode == 3 and missing.stdout == ""
    assert missing.stderr.startswith("modelctl: error: no model card for ai/no-such-model")
    assert missing.stderr.count("\n") == 1

    both = modelctl("card", "ai/llama3.1", "--json", "--raw", home=home)
    assert both.returncode == 2 and both.stderr.count("\n") == 1


def test_card_attached_in_the_local_store_and_in_the_registry(
    registry: str, tmp_path: Path, smollm2_gguf: Path
) -> None:
    card = tmp_path / "card.md"
    card.write_text(CUSTOM)
    publisher, reader = tmp_path / "publisher", tmp_path / "reader"
    ref = f"{registry}/ai/smollm2:135M-Q4_1"
    made = modelctl("package", "--gguf", str(smollm2_gguf), "--card", str(card), "--push", ref, home=publisher)
    assert made.returncode == 0, made.stderr

    local = modelctl("card", ref, "--json", home=publisher)
    assert local.returncode == 0, local.stderr
    doc = json.loads(local.stdout)
    assert doc["title"] == "My SmolLM2 build" and doc["card_source"]["kind"] == "local store"

    remote = modelctl("card", ref, "--raw", home=reader)  # not in the reader's store: the registry's card
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == CUSTOM
    assert json.loads(modelctl("card", ref, "--json", home=reader).stdout)["card_source"]["kind"] == "registry"

    untagged = f"{registry}/ai/smollm2:other"  # no such tag and no attached card: the bundled card
    bundled = modelctl("card", untagged, "--json", home=reader)
    assert bundled.returncode == 0, bundled.stderr
    assert json.loads(bundled.stdout)["card_source"]["kind"] == "bundled"

    broken = tmp_path / "broken.md"
    broken.write_text("---\ntitle: [unclosed\n---\nHello\n")
    other = f"{registry}/test/broken:1"
    assert (
        modelctl("package", "--gguf", str(smollm2_gguf), "--card", str(broken), other, home=publisher).returncode == 0
    )
    shown = modelctl("card", other, home=publisher)
    assert shown.returncode == 0 and "Hello" in shown.stdout and "not valid YAML" in shown.stderr
    as_json = modelctl("card", other, "--json", home=publisher)
    assert as_json.returncode == 2 and as_json.stderr.count("\n") == 1 and "front matter" in as_json.stderr


def test_search_lists_the_bundled_cards(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = modelctl("search", "--json", home=home)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    refs = {r["reference"] for r in rows}
    assert {"ai/llama3.1:8B-Q4_K_M", "ai/llama3.1:70B-Q4_K_M", "ai/smollm2:135M-Q4_1"} <= refs
    assert all(r["fits"] in ("fits", "partial", "does_not_fit") and r["vram"] > 0 and r["size"] > 0 for r in rows)

    table = modelctl("search", "smollm2", home=home)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["MODEL", "PARAMETERS"] and "FITS HERE" in lines[0]
    assert len(lines) == 1 + sum(r["repository"] == "ai/smollm2" for r in rows)

    none = modelctl("search", "no-such-thing", home=home)
    assert none.returncode == 0 and none.stdout == "" and "no bundled model card" in none.stderr


def test_list_does_not_load_yaml_or_rich_markdown(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelctl", "list"],
        env=dict(os.environ, MODELCTL_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "yaml" not in imported and "rich.markdown" not in imported and "modelctl.cards" not in imported


def test_the_wheel_carries_the_cards(tmp_path: Path) -> None:
    """Built from a copy of the sources (setuptools writes build/ and *.egg-info beside them)."""
    src, out = tmp_path / "src", tmp_path / "wheel"
    for name in ("modelctl", "registry", "cards"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("modelctl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for path in sorted((REPO / "cards").rglob("*.md")):
        assert f"modelctl/_cards/{path.relative_to(REPO / 'cards')}" in names
    assert "modelctl/cards.py" in names
    assert re.search(r"^Requires-Dist: pyyaml", metadata, re.M | re.I)
