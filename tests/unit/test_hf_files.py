"""Choosing a Hugging Face repository's GGUF files for a quantisation tag (modelctl.hf_files: pure)."""

from __future__ import annotations

import pytest

from modelctl import hf_files
from modelctl.errors import NotFound
from modelctl.hf_files import HubFile, available, choose, quant_of, shard_of


def files(*paths: str) -> list[HubFile]:
    return [HubFile(path=p, size=100, sha256="a" * 64) for p in paths]


@pytest.mark.parametrize(
    ("path", "quant"),
    [
        ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.q8_0.gguf", "Q8_0"),
        ("Qwen2.5-7B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("Model-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("model-f16.gguf", "F16"),
        ("model-BF16-00001-of-00002.gguf", "BF16"),
        ("Q4_K_M/Big-00001-of-00003.gguf", "Q4_K_M"),
        ("Qwen2.5-7B.gguf", None),
        ("model.gguf", None),
    ],
)
def test_quant_of(path: str, quant: str | None) -> None:
    assert quant_of(path) == quant


def test_shard_of() -> None:
    assert shard_of("x/Big-Q4_K_M-00002-of-00003.gguf") == ("x/Big-Q4_K_M", 2, 3)
    assert shard_of("Big-Q4_K_M.gguf") is None


def test_default_is_q4_k_m() -> None:
    sel = choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q2_K.gguf", "README.md"), None)
    assert sel.quant == "Q4_K_M" and [f.path for f in sel.shards] == ["m-Q4_K_M.gguf"]
    assert choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "latest").quant == "Q4_K_M"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (("m-Q8_0.gguf", "m-Q4_1.gguf", "m-Q2_K.gguf"), "Q4_1"),
        (("m-Q8_0.gguf", "m-Q4_K_S.gguf", "m-Q5_K_M.gguf"), "Q4_K_S"),
        (("m-Q8_0.gguf", "m-Q3_K_M.gguf"), "Q3_K_M"),
        (("m-F16.gguf", "m-Q8_0.gguf"), "Q8_0"),
        (("m-Q4_0.gguf", "m-IQ4_NL.gguf"), "IQ4_NL"),  # a tie: decided by file name, deterministically
    ],
)
def test_closest_quant(offered: tuple[str, ...], chosen: str) -> None:
    assert choose(files(*offered), None).quant == chosen


def test_unlabelled_single_file() -> None:
    sel = choose(files("model.gguf"), None)
    assert sel.quant is None and [f.path for f in sel.shards] == ["model.gguf"]


def test_explicit_quant_any_case_and_exact() -> None:
    assert choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "q8_0").quant == "Q8_0"
    with pytest.raises(NotFound, match="no Q5_K_M") as info:
        choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "Q5_K_M", repo="hf.co/a/b")
    assert info.value.hint == "available quantisations: Q8_0, Q4_K_M"


def test_split_model_all_shards_in_order() -> None:
    listed = files(
        "Q4_K_M/Big-Q4_K_M-00003-of-00003.gguf",
        "Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/Big-Q4_K_M-00002-of-00003.gguf",
        "Big-Q8_0.gguf",
    )
    sel = choose(listed, None)
    assert [f.path for f in sel.shards] == [f"Q4_K_M/Big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_incomplete_split_is_not_chosen() -> None:
    listed = files("Big-Q4_K_M-00001-of-00003.gguf", "Big-Q4_K_M-00003-of-00003.gguf", "Big-Q8_0.gguf")
    assert choose(listed, None).quant == "Q8_0"
    with pytest.raises(NotFound, match="incomplete"):
        choose(listed, "Q4_K_M")
    assert available(listed) == ["Q8_0"]


def test_mmproj_is_attached_not_chosen_as_weights() -> None:
    listed = files("m-Q4_K_M.gguf", "mmproj-m-Q8_0.gguf", "mmproj-m-f16.gguf", "mmproj-m-F32.gguf")
    sel = choose(listed, None)
    assert [f.path for f in sel.shards] == ["m-Q4_K_M.gguf"]
    assert sel.mmproj is not None and sel.mmproj.path == "mmproj-m-f16.gguf"
    assert [f.path for f in sel.files] == ["m-Q4_K_M.gguf", "mmproj-m-f16.gguf"]
    assert sel.size == 200
    assert choose(files("m-Q4_K_M.gguf"), None).mmproj is None


def test_no_gguf() -> None:
    with pytest.raises(NotFound, match="no GGUF file"):
        choose(files("model.safetensors", "README.md"), None)
    with pytest.raises(NotFound):
        choose(files("mmproj-only-f16.gguf"), None)


@pytest.mark.parametrize(
    "hostile",
    [
        "../evil-Q4_K_M.gguf",
        "/etc/evil-Q4_K_M.gguf",
        "a/../../evil-Q4_K_M.gguf",
        "a\\..\\evil-Q4_K_M.gguf",
        "evil\n-Q4_K_M.gguf",
        "./evil-Q4_K_M.gguf",
        "a//evil-Q4_K_M.gguf",
    ],
)
def test_names_that_could_escape_the_download_directory_are_never_chosen(hostile: str) -> None:
    assert not hf_files.is_safe_path(hostile)
    chosen = hf_files.choose(files(hostile, "sub/model-Q4_K_M.gguf"), None)
    assert [f.path for f in chosen.files] == ["sub/model-Q4_K_M.gguf"]
    with pytest.raises(NotFound):
        hf_files.choose(files(hostile), None)
