"""An Ollama ``params`` layer becomes run's sampling defaults; bad values are ignored with a note, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelctl.digest import of_bytes
from modelctl.oci.descriptor import Descriptor
from modelctl.runtime.conversation import Sampling
from modelctl.services.run import sampling_from_params
from modelctl.store import Layout


def params(tmp_path: Path, doc: object) -> tuple[Layout, Descriptor]:
    store = Layout(tmp_path / "store")
    store.ensure()
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    digest = store.write_blob(data)
    assert digest == of_bytes(data)
    return store, Descriptor(media_type="application/vnd.ollama.image.params", digest=digest, size=len(data))


def test_params_become_defaults(tmp_path: Path) -> None:
    notes: list[str] = []
    doc = {"temperature": 0.2, "top_p": 0.5, "top_k": 7, "seed": 3, "num_predict": 64, "stop": ["<|im_end|>"]}
    got = sampling_from_params(*params(tmp_path, doc), notes)
    assert got == Sampling(temperature=0.2, top_p=0.5, top_k=7, seed=3, max_tokens=64, stop=("<|im_end|>",))
    assert notes == []


def test_no_params_layer_is_llama_cpp_defaults(tmp_path: Path) -> None:
    store = Layout(tmp_path / "store")
    assert sampling_from_params(store, None, []) == Sampling()


@pytest.mark.parametrize(
    ("doc", "ignored"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 3}, "top_p"),
        ({"top_k": 1.5}, "top_k"),
        ({"stop": [1, 2]}, "stop"),
        ({"stop": {"a": 1}}, "stop"),
    ],
)
def test_invalid_values_are_ignored_with_a_note(tmp_path: Path, doc: dict[str, object], ignored: str) -> None:
    notes: list[str] = []
    assert sampling_from_params(*params(tmp_path, doc), notes) == Sampling()
    assert notes == [f"ignored invalid params: {ignored}"]


def test_unlimited_num_predict_and_a_single_stop_string(tmp_path: Path) -> None:
    got = sampling_from_params(*params(tmp_path, {"num_predict": -1, "stop": "###"}), [])
    assert got.max_tokens is None and got.stop == ("###",)


def test_a_params_layer_that_is_not_json_is_a_note(tmp_path: Path) -> None:
    notes: list[str] = []
    assert sampling_from_params(*params(tmp_path, b"\xff not json"), notes) == Sampling()
    assert notes and "not JSON" in notes[0]


def test_a_params_layer_nested_50000_deep_is_a_note(tmp_path: Path) -> None:
    notes: list[str] = []
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000  # json.loads: RecursionError
    assert sampling_from_params(*params(tmp_path, deep), notes) == Sampling()
    assert notes and "not JSON" in notes[0]
