"""The fit estimate against GPU load logs people published (tests/fixtures/gpu_logs, benchmarks/gpu_logs.py): every
record of the bundled llama.cpp within the issue's targets (KV exact to 0.1 MiB, compute +15% / -0%, model buffers
within 1%), records from builds that allocate differently named and reported apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.benchmarks import load  # tests/ is on sys.path

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / "tests" / "fixtures" / "gpu_logs"
MODEL_KEYS = {
    "arch", "n_vocab", "n_ctx_train", "n_embd", "n_layer", "n_head", "n_head_kv", "n_embd_head_k", "n_embd_head_v",
    "n_ff", "n_ff_exp", "n_swa", "n_expert", "n_expert_used", "tensor_types", "size_mib",
}  # fmt: skip
SETTINGS_KEYS = {
    "n_ctx", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v", "n_seq_max", "kv_unified", "swa_full",
    "offload_kqv", "gpu_layers", "n_cpu_moe", "split_mode", "tensor_split",
}  # fmt: skip


gl = load("gpu_logs")

RECORDS = gl.load(LOGS)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("gpu-logs")
    return {r.record: r for r in gl.run(LOGS, work)}


@pytest.mark.parametrize(("name", "record"), RECORDS, ids=[n for n, _ in RECORDS])
def test_record_is_numbers_with_a_source(name: str, record: dict[str, object]) -> None:
    assert str(record["source"]).startswith("https://")
    assert record["backend"] in ("cuda", "rocm", "vulkan", "metal")
    model, settings = record["model"], record["settings"]
    assert isinstance(model, dict) and set(model) >= MODEL_KEYS
    assert isinstance(settings, dict) and set(settings) >= SETTINGS_KEYS
    devices = record["devices"]
    assert isinstance(devices, list) and all({"name", "total_mib", "free_mib"} <= set(d) for d in devices)
    buffers = record["buffers"]
    assert isinstance(buffers, list) and buffers
    for b in buffers:
        assert b["phase"] in ("model", "kv", "compute", "output") and isinstance(b["mib"], float | int)
    apart = record.get("allocates_differently")
    if apart:
        assert isinstance(apart, dict) and apart["change"] and str(apart["pr"]).startswith("https://github.com/")
        also = apart.get("also") or []
        for pr in [also] if isinstance(also, str) else also:
            assert str(pr).startswith("https://github.com/ggml-org/llama.cpp/pull/"), pr


MATCHING = [(n, r) for n, r in RECORDS if not r.get("allocates_differently")]


@pytest.mark.parametrize(("name", "record"), MATCHING, ids=[n for n, _ in MATCHING])
def test_bundled_llama_cpp_records_are_within_the_targets(
    name: str, record: dict[str, object], results: dict[str, object]
) -> None:
    result = results[name]
    assert result.rows and not result.apart  # type: ignore[attr-defined]
    misses = result.misses()  # type: ignore[attr-defined]
    assert not misses, [(m.phase, m.device, m.logged_mib, m.predicted_mib) for m in misses]


def test_some_records_were_not_used_to_calibrate(results: dict[str, object]) -> None:
    held_out = [n for n, r in RECORDS if not r.get("calibration") and not r.get("allocates_differently")]
    assert held_out, "every matching record was used to fit the GPU compute formula"
    assert {results[n].backend for n in held_out}  # type: ignore[attr-defined]


def test_apart_records_are_reported_apart(results: dict[str, object]) -> None:
    text = gl.summary(list(results.values()))
    assert "records from builds that allocate differently" in text
    assert all(r.apart == bool(dict(RECORDS)[n].get("allocates_differently")) for n, r in results.items())  # type: ignore[attr-defined]


def test_the_rebuilt_header_has_the_logged_tensor_mix(tmp_path: Path) -> None:
    from modelctl.gguf import FileSource, ggml_type_name, read_header

    name, record = next((n, r) for n, r in RECORDS if r["model"]["tensor_types"] and "q4_0" in n)
    path = gl.write_header(record["model"], tmp_path / "m.gguf")
    header = read_header(FileSource(path))
    counts: dict[str, int] = {}
    for t in header.tensors:
        counts[ggml_type_name(t.ggml_type).lower()] = counts.get(ggml_type_name(t.ggml_type).lower(), 0) + 1
    assert counts == {k.lower(): v for k, v in record["model"]["tensor_types"].items()}, name
    assert path.stat().st_size == header.file_size and path.stat().st_blocks * 512 < path.stat().st_size  # sparse


def test_the_targets_are_the_issues() -> None:
    """KV exact to 0.1 MiB, compute +15% / -0%, model buffers within 1%: what every matching record is held to."""
    assert MATCHING, "no record matches the bundled llama.cpp: the target test would run on nothing"
    row = gl.Row
    assert row("kv", "CUDA0", 640.0, 640.09).within() and not row("kv", "CUDA0", 640.0, 640.2).within()
    assert row("compute", "CUDA0", 100.0, 115.0).within() and not row("compute", "CUDA0", 100.0, 115.1).within()
    assert not row("compute", "CUDA0", 100.0, 99.9).within()
    assert row("model", "CUDA0", 1000.0, 1010.0).within() and not row("model", "CUDA0", 1000.0, 989.0).within()


def test_every_backend_has_records_and_apart_ones_name_the_change() -> None:
    assert {r["backend"] for _, r in RECORDS} == {"cuda", "rocm", "vulkan", "metal"}
    assert len(RECORDS) >= 22
    # PR 14959, PR 17046, PR 23861 (llama-server's reserved outputs), PR 19067 (the V-less MLA cache)
    known = ("set_rows", "pad", "n_outputs_max", "V-less")
    for name, record in RECORDS:
        apart = record.get("allocates_differently")
        assert not apart or any(change in apart["change"] for change in known), name


def _prs(record: dict[str, object]) -> set[int]:
    """The llama.cpp pull requests a record names for its differences."""
    apart = record.get("allocates_differently")
    assert isinstance(apart, dict)
    also = apart.get("also") or []
    urls = [apart["pr"], *([also] if isinstance(also, str) else also)]
    return {int(str(url).rsplit("/", 1)[1]) for url in urls}


def test_each_gpt_oss_difference_names_its_pull_request() -> None:
    """b6182's three differences: the 32-cell padding (PR 17046), Vulkan's op offload rule (ne[1] >= 32, replaced by
    ggml_vk_get_op_batch_size in PR 19976) and -ngl counting the repeating layers first (the output layer first
    since PR 18148, which the record's replay undoes)."""
    record = dict(RECORDS)["vulkan-m2pro-gpt-oss-20b-ncmoe14.json"]
    assert _prs(record) == {17046, 19976, 18148}
    replay = record["replay"]
    assert isinstance(replay, dict) and str(replay["pr"]).endswith("/18148")


def test_the_mla_record_names_its_changes_and_what_is_not_one() -> None:
    """The b5331 MLA load: its V part of the cache (PR 19067) and its pre-set_rows KV writes (PR 14959) are changes;
    its compute buffers (the absorbed MLA graph, PR 12801) and pipeline parallelism off under --override-tensor
    (PR 11397) are the same in the bundled llama.cpp, so they are said apart from the changes, not listed as them."""
    record = dict(RECORDS)["cuda-4x-deepseek-v3-0324-mla-fa-ub1024.json"]
    assert _prs(record) == {19067, 14959}
    apart = record["allocates_differently"]
    assert isinstance(apart, dict)
    assert "PR 12801" in apart["same_in_both"] and "PR 11397" in apart["same_in_both"]


def test_the_mla_record_splits_its_layers_as_the_log_and_keeps_k_only(results: dict[str, object]) -> None:
    """The four-GPU DeepSeek-V3 load: its per-GPU cache lines (510/408/408/748 MiB: K 576 + V 512 values per cell)
    fix the layer split at 15/12/12/22, which the logged free memory reproduces; the bundled V-less MLA cache keeps
    the K part of those layers only (576 of 1088 values)."""
    name = "cuda-4x-deepseek-v3-0324-mla-fa-ub1024.json"
    rows = {(r.phase, r.device): r for r in results[name].rows}  # type: ignore[attr-defined]
    for device in ("CUDA0", "CUDA1", "CUDA2", "CUDA3"):
        row = rows[("kv", device)]
        assert row.predicted_mib == pytest.approx(row.logged_mib * 576 / 1088, abs=0.01), device


def test_the_gpt_oss_record_replays_the_logged_placement(results: dict[str, object], tmp_path: Path) -> None:
    """The b6182 Vulkan load of gpt-oss-20b (--n-cpu-moe 14): its -ngl 24 kept the output layer on the host, replayed
    as -ngl 25 with output.weight overridden to the CPU. Rebuilt with the published file's mix (MXFP4 experts, Q8_0
    elsewhere, float biases and routers), the GPU's weights are the logged ones and its compute buffer is the output
    matrix copied in (op offload) beside the logits; the host compute is apart (that build ran the expert-bias adds
    of the host layers on the host)."""
    from modelctl.gguf import FileSource, ggml_type_name, read_header

    name = "vulkan-m2pro-gpt-oss-20b-ncmoe14.json"
    record = dict(RECORDS)[name]
    header = read_header(FileSource(gl.write_header(record["model"], tmp_path / "g.gguf")))
    mxfp4 = {t.name for t in header.tensors if ggml_type_name(t.ggml_type).lower() == "mxfp4"}
    assert len(mxfp4) == 72 and all(n.endswith("_exps.weight") for n in mxfp4)
    rows = {(r.phase, r.device): r for r in results[name].rows}  # type: ignore[attr-defined]
    assert rows[("model", "Vulkan0")].within() and rows[("compute", "Vulkan0")].within()
    output, logits, e_t = 201088 * 3060, 201088 * 512 * 4, 2880 * 512 * 4
    assert rows[("compute", "Vulkan0")].logged_mib == pytest.approx((output + logits + e_t) / 2**20, abs=0.01)
    host = rows[("compute", "host")]
    # that build's host: the masks (4096 and 640 cells), the K and transposed-V row indices, two expert results
    masks, idxs, experts = (4096 + 640) * 512 * 4, 2 * 512 * 8 * (1 + 512), 2 * 2880 * 4 * 512 * 4
    assert host.logged_mib == pytest.approx((masks + idxs + experts) / 2**20, abs=0.1)
    assert host.predicted_mib < host.logged_mib  # the bundled backend runs those adds on the GPU


REPLAY_MISSES: dict[tuple[str, str, str], str] = {
    ("cuda-orin-qwen3-0.6b-q4_k_m-ngl0.json", "compute", "CUDA0"): "2.46 MiB over the replay (b5489, no layer "
    "offloaded): about one hidden state (n_embd x n_ubatch floats, 2 MiB) more than the rules explain",
    ("cuda-orin-qwen3-0.6b-q4_k_m-ngl0.json", "compute", "host"): "the same hidden state on the host (12.01 logged, "
    "10.01 replayed); the bundled prediction is over both (+0.4%, +16.7%)",
    ("vulkan-m2pro-gpt-oss-20b-ncmoe14.json", "compute", "host"): "b6182's Vulkan op-offload rule (PR 19976), not a "
    "rule modelctl.fit.builds replays",
    ("rocm-mi300x-qwen3-0.6b-fa-q8_0-ngl1.json", "compute", "ROCm0"): "0.88 MiB (-2.1%) under with one layer on the "
    "GPU and the rest's products offloaded: the copied host matrix depends on the file's quantisation, which the "
    "issue does not name (rebuilt as f16); the same load with every layer offloaded is within the target",
    ("rocm-8x-mi250x-deepseek-r1-ollama.json", "compute", "host"): "6 MiB of host inputs more than the replay "
    "(78.02 logged, 72.01 replayed) in Ollama's early-2025 build; the bundled prediction is over (136.02)",
}
"""Buffers still outside the targets when a record is replayed with its own build's rules, each with the reason."""


def test_apart_records_replay_their_build_or_say_why_not() -> None:
    for name, record in RECORDS:
        if not record.get("allocates_differently"):
            continue
        replay = record.get("replay") or {}
        assert isinstance(replay, dict)
        assert replay.get("rules") is not None or record.get("not_replayed"), name


def test_replayed_records_are_within_the_targets_but_the_known_misses(results: dict[str, object]) -> None:
    """With the rules of the build that printed them (set_rows, cache padding, the MLA cache's V part), the apart
    records' buffers are within the targets, except the listed ones: a miss that is fixed, or a new one, fails."""
    misses = {
        (name, row.phase, row.device)
        for name, res in results.items()
        for row in res.rows  # type: ignore[attr-defined]
        if row.replay_within() is False
    }
    assert misses == set(REPLAY_MISSES)
    replayed = [row for res in results.values() for row in res.rows if row.replayed_mib is not None]  # type: ignore[attr-defined]
    assert len(replayed) >= 100


def test_a_record_can_leave_a_buffer_out_only_with_a_reason(results: dict[str, object]) -> None:
    for name, record in RECORDS:
        for skipped in record.get("not_compared") or ():
            assert skipped["why"], name
            rows = {(r.phase, r.device) for r in results[name].rows}  # type: ignore[attr-defined]
            assert (skipped["phase"], skipped["device"]) not in rows
