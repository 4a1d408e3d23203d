"""Model cards: the schema, the bundled cards, their computed memory figures, and the card variants in fit's
suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl import cards, gguf
from modelctl.cpu import WeightBuffers
from modelctl.errors import CardError
from modelctl.fit import synthetic
from modelctl.fit.devices import Device
from modelctl.fit.estimate import estimate
from modelctl.fit.report import fit_headers
from modelctl.fit.settings import RunSettings
from modelctl.services import catalog

NO_EXTRA = WeightBuffers(setting="none")
"""Cards describe the GPU: no CPU weight copies, whatever this machine's CPU."""

GIB = 1 << 30
REPO = Path(__file__).resolve().parents[2]
CARDS = sorted((REPO / "cards").rglob("*.md"))

MINIMAL = """---
repository: ai/tiny
title: Tiny
provider: Nobody
architecture: llama
license: {name: MIT, url: https://opensource.org/license/mit}
languages: [English]
capabilities: {tool_calling: false, modalities: [text]}
shape:
  1M: {n_layer: 2, n_embd: 256, n_head: 4, n_head_kv: 2, n_ff: 512, n_vocab: 1000, context_length: 2048}
variants:
  - tag: 1M-Q8_0   # the only one
    parameters: 1M
    quantization: Q8_0
    context_window: 2048
    latest: true
---
# Tiny

Body text.
"""


def _with(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


# --- the bundled cards


def test_the_bundled_cards_are_the_repository_cards() -> None:
    assert len(CARDS) >= 5
    names = {c.repository for c in cards.bundled()}
    assert {"ai/llama3.1", "ai/smollm2", "ai/qwen2.5", "ai/gemma3", "ai/mistral"} <= names
    for path in CARDS:
        card = cards.parse(path.read_text(), source=str(path))
        assert f"{card.repository}.md" == str(path.relative_to(REPO / "cards")), "a card lives at its repository's path"
        assert card.latest is not None, f"{path}: no variant is marked latest"
        assert card.sources, f"{path}: cite where the facts come from"
        assert all(v.size and v.vram for v in card.variants), f"{path}: run scripts/update_cards.py"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_card_figures_agree_with_the_estimator(path: Path) -> None:
    """size and vram are computed, never typed: a card that disagrees with the estimator fails here."""
    text = path.read_text()
    card = cards.parse(text, source=str(path))
    for v in card.variants:
        want = synthetic.computed(card, v)
        assert (v.size, v.vram) == (want["size"], want["vram"]), (
            f"{path}: {v.tag} says size {v.size} vram {v.vram}, the estimator {want}: run scripts/update_cards.py"
        )
    assert synthetic.update_text(text, source=str(path)) == text


def test_llama31_card_facts() -> None:
    card = cards.bundled_card("ai/llama3.1")
    assert card is not None
    assert card.latest is not None and card.latest.tag == "8B-Q4_K_M"
    assert {v.tag for v in card.variants} >= {"8B-Q4_K_M", "8B-F16", "70B-Q4_K_M"}
    assert card.languages == ("English", "German", "French", "Italian", "Portuguese", "Hindi", "Spanish", "Thai")
    assert card.cutoff == "2023-12" and card.capabilities.tool_calling
    assert all(v.context_window == 131072 for v in card.variants)
    scores = {b.name: b.score for b in card.benchmarks if b.parameters == "8B"}
    assert scores == {"MMLU": 69.4, "HumanEval": 72.6, "GSM-8K (CoT)": 84.5}
    # the 8B Q4_K_M GGUF llama.cpp makes is 4.92 GB; the 70B one 42.5 GB
    assert abs(card.variant("8B-Q4_K_M").size - 4.92e9) < 0.02e9  # type: ignore[union-attr,operator]
    assert abs(card.variant("70B-Q4_K_M").size - 42.5e9) < 0.3e9  # type: ignore[union-attr,operator]


def test_smollm2_card_keeps_the_demo_variant() -> None:
    card = cards.bundled_card("ai/smollm2")
    assert card is not None and card.license.name == "Apache-2.0"
    assert card.variant("135M-Q4_1") is not None, "make demo packages 135M-Q4_1"
    assert {v.parameters for v in card.variants} == {"135M", "360M"}


# --- the synthetic header against a real file


def test_synthetic_header_is_the_real_smollm2_file(smollm2_gguf: Path) -> None:
    """The header built from the card's shape has the real file's tensors (names, shapes, types), hence the same
    weights and the same estimate."""
    real = gguf.read_header(gguf.FileSource(smollm2_gguf))
    card = cards.bundled_card("ai/smollm2")
    assert card is not None
    variant = card.variant("135M-Q4_1")
    assert variant is not None
    made = synthetic.variant_header(card, variant)
    assert {t.name: (t.shape, t.ggml_type) for t in made.tensors} == {
        t.name: (t.shape, t.ggml_type) for t in real.tensors
    }
    assert sum(t.n_bytes for t in made.tensors) == sum(t.n_bytes for t in real.tensors)  # the weights
    assert abs((made.file_size or 0) - smollm2_gguf.stat().st_size) < 0.01 * smollm2_gguf.stat().st_size
    for ngl in (0, -1):
        a = estimate(real, RunSettings(), gpu_layers=ngl, gpu_split=(), buffers=NO_EXTRA)
        b = estimate(made, RunSettings(), gpu_layers=ngl, gpu_split=(), buffers=NO_EXTRA)
        assert a == b


def test_q4_k_m_mix_follows_llama_cpp() -> None:
    card = cards.bundled_card("ai/llama3.1")
    assert card is not None
    header = synthetic.synthetic_header(card.shape["8B"], "Q4_K_M", architecture="llama")
    types = {t.name: t.type_name for t in header.tensors}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    more = [i for i in range(32) if types[f"blk.{i}.ffn_down.weight"] == "Q6_K"]
    assert more == [i for i in range(32) if types[f"blk.{i}.attn_v.weight"] == "Q6_K"]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]  # use_more_bits for 32 layers
    assert {types[f"blk.{i}.attn_q.weight"] for i in range(32)} == {"Q4_K"}
    big = synthetic.synthetic_header(card.shape["70B"], "Q4_K_M", architecture="llama")
    assert {t.type_name for t in big.tensors if t.name.endswith("attn_v.weight")} == {"Q5_K", "Q6_K"}


def test_rows_that_do_not_split_into_k_blocks_fall_back() -> None:
    card = cards.bundled_card("ai/smollm2")
    assert card is not None
    header = synthetic.synthetic_header(card.shape["360M"], "Q4_K_M", architecture="llama")  # n_embd 960
    types = {t.name: t.type_name for t in header.tensors}
    assert types["blk.5.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0
    assert types["token_embd.weight"] == "Q8_0"  # tied output: Q6_K -> Q8_0
    assert types["blk.0.ffn_down.weight"] == "Q6_K"  # rows of n_ff 2560 split into 256-blocks


def test_unknown_quantization_is_a_card_error() -> None:
    card = cards.parse(_with("quantization: Q8_0", "quantization: IQ1_S"), source="x.md")
    with pytest.raises(CardError, match="IQ1_S"):
        synthetic.computed(card, card.variants[0])


# --- the schema


def test_minimal_card_parses() -> None:
    card = cards.parse(MINIMAL, source="tiny.md")
    assert card.repository == "ai/tiny" and card.body == "# Tiny\n\nBody text.\n"
    assert card.variant("latest") == card.variant(None) == card.variants[0]
    assert card.shape["1M"].n_head_kv == 2 and not card.shape["1M"].tied_embeddings
    doc = card.to_json()
    assert doc["variants"][0]["tag"] == "1M-Q8_0" and doc["license"]["name"] == "MIT"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter\n", "tiny.md: no YAML front matter"),
        ("---\nrepository: ai/x\n", "tiny.md: front matter is not closed"),
        ("---\n[unclosed\n---\n", "tiny.md: front matter is not valid YAML"),
        ("---\n- a list\n---\n", "tiny.md: front matter: must be a mapping"),
        (_with("title: Tiny\n", ""), "tiny.md: title: missing"),
        (_with("title: Tiny", "title: Tiny\ncolour: red"), "tiny.md: colour: unknown field"),
        (_with("repository: ai/tiny", "repository: AI Tiny"), "tiny.md: repository: 'AI Tiny' does not match"),
        (_with("tool_calling: false", "tool_calling: sometimes"), "tiny.md: capabilities.tool_calling: must be"),
        (_with("modalities: [text]", "modalities: [smell]"), "tiny.md: capabilities.modalities[0]: 'smell'"),
        (_with("n_layer: 2", "n_layer: two"), "tiny.md: shape.1M.n_layer: must be an integer"),
        (_with("n_head_kv: 2", "n_head_kv: 3"), "tiny.md: shape.1M.n_head_kv: 3 does not divide n_head 4"),
        (_with("parameters: 1M", "parameters: 2M"), "tiny.md: variants[0].parameters: '2M' has no entry in shape"),
        (_with("context_window: 2048", "context_window: 0"), "tiny.md: variants[0].context_window: must be at"),
        (_with("license: {name: MIT, url: https", "license: {name: MIT, url: http"), "tiny.md: license.url"),
        (_with("languages: [English]", "languages: English"), "tiny.md: languages: must be a list"),
        (_with("architecture: llama\n", "architecture: llama\ncutoff: Dec 2023\n"), "tiny.md: cutoff: 'Dec 2023'"),
        (
            _with(
                "    latest: true\n",
                "    latest: true\n  - tag: 1M-Q8_0\n    parameters: 1M\n    "
                "quantization: Q8_0\n    context_window: 2048\n",
            ),
            "tiny.md: variants[1].tag: '1M-Q8_0' is listed twice",
        ),
        (_with("variants:\n", "variants: []\nx_variants:\n"), "tiny.md: x_variants: unknown field"),
    ],
)
def test_schema_errors_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(CardError) as caught:
        cards.parse(text, source="tiny.md")
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


def test_two_latest_variants_are_refused() -> None:
    text = _with(
        "    latest: true\n",
        "    latest: true\n  - tag: 1M-F16\n    parameters: 1M\n    quantization: F16\n"
        "    context_window: 2048\n    latest: true\n",
    )
    with pytest.raises(CardError, match="more than one variant is marked latest"):
        cards.parse(text, source="tiny.md")


def test_with_values_rewrites_only_the_computed_fields() -> None:
    once = cards.with_values(MINIMAL, {"1M-Q8_0": {"size": 123, "vram": 456}}, source="tiny.md")
    assert "    size: 123\n    vram: 456\n" in once and "# the only one" in once and once.endswith("Body text.\n")
    twice = cards.with_values(once, {"1M-Q8_0": {"size": 7, "vram": 8}}, source="tiny.md")
    assert twice == once.replace("size: 123", "size: 7").replace("vram: 456", "vram: 8")
    card = cards.parse(twice, source="tiny.md")
    assert (card.variants[0].size, card.variants[0].vram) == (7, 8)


# --- fit's suggestion and search


def _machine(gpu_free: int, ram_free: int) -> list[Device]:
    return [
        Device(name="gpu0", kind="cuda", total=gpu_free, free=gpu_free, index=0),
        Device(name="cpu", kind="cpu", total=ram_free, free=ram_free),
    ]


def test_variants_for_names_the_other_variants_of_the_repository() -> None:
    found = synthetic.variants_for("ai/llama3.1:70B-Q4_K_M")
    assert {v.reference for v in found} == {"ai/llama3.1:8B-Q4_K_M", "ai/llama3.1:8B-F16"}
    latest = synthetic.variants_for("docker.io/ai/llama3.1")  # latest is 8B-Q4_K_M: the others are offered
    assert {v.reference for v in latest} == {"ai/llama3.1:8B-F16", "ai/llama3.1:70B-Q4_K_M"}
    mirrored = synthetic.variants_for("127.0.0.1:5000/ai/smollm2:360M-F16")
    assert "127.0.0.1:5000/ai/smollm2:135M-Q4_1" in {v.reference for v in mirrored}
    assert synthetic.variants_for("ai/no-such-model") == ()
    assert synthetic.variants_for("hf.co/bartowski/x") == ()


def test_fit_suggests_a_smaller_variant_from_the_card() -> None:
    """70B on an 8 GiB GPU + 16 GiB RAM does not fit; the suggestion names the largest card variant that does."""
    card = cards.bundled_card("ai/llama3.1")
    assert card is not None
    header = synthetic.variant_header(card, card.variant("70B-Q4_K_M"))  # type: ignore[arg-type]
    report = fit_headers(
        [header],
        RunSettings(),
        devices=_machine(8 * GIB, 16 * GIB),
        variants=synthetic.variants_for("ai/llama3.1:70B-Q4_K_M"),
        buffers=NO_EXTRA,
    )
    assert report.verdict == "does_not_fit"
    assert report.suggestion is not None and "try ai/llama3.1:8B-F16" in report.suggestion
    smaller = fit_headers(
        [header],
        RunSettings(),
        devices=_machine(4 * GIB, 4 * GIB),
        variants=synthetic.variants_for("ai/llama3.1:70B-Q4_K_M"),
        buffers=NO_EXTRA,
    )
    assert smaller.suggestion is not None and "try ai/llama3.1:8B-Q4_K_M" in smaller.suggestion


def test_search_judges_every_variant_on_the_given_machine() -> None:
    rows = catalog.search(devices=_machine(8 * GIB, 16 * GIB))
    verdicts = {f"{r.repository}:{r.tag}": r.fits for r in rows}
    assert verdicts["ai/llama3.1:8B-Q4_K_M"] == "fits"
    assert verdicts["ai/llama3.1:8B-F16"] == "partial"
    assert verdicts["ai/llama3.1:70B-Q4_K_M"] == "does_not_fit"
    assert verdicts["ai/smollm2:135M-Q4_1"] == "fits"
    only = catalog.search("META", devices=_machine(8 * GIB, 16 * GIB))
    assert {r.repository for r in only} == {"ai/llama3.1"}
    assert catalog.search("no-such-thing", devices=[]) == []
    row = next(r for r in rows if r.tag == "8B-Q4_K_M")
    assert row.to_json()["reference"] == "ai/llama3.1:8B-Q4_K_M" and row.latest and row.vram > row.size
