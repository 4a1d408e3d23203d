"""``modelctl run`` one-shot with the real SmolLM2-135M model (small context, two threads: CI has two cores).

At temperature 0 the 135M model answers the bare question with the system prompt its chat template injects
("You are a helpful AI assistant named SmolLM...") with French word salad, so the tests give a system message
asking for a short answer: the point is modelctl's path from reference to streamed answer, not the model's IQ.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

Runner = Callable[..., subprocess.CompletedProcess[str]]

REF = "ai/smollm2:135M-Q4_1"
FAST = ("--ctx-size", "1024", "--threads", "2")
SHORT = ("--temperature", "0", "--system", "Answer in one short sentence.")
QUESTION = "What is the capital of France?"
LOAD_LOG = "llama_model_loader"
"""A line llama.cpp prints while it loads a model (shown only with --debug)."""


def test_one_shot_answers(modelctl: Runner) -> None:
    result = modelctl("run", REF, QUESTION, *FAST, *SHORT)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert result.stdout.endswith("\n")
    assert LOAD_LOG not in result.stderr  # llama.cpp's load logs stay hidden without --debug


def test_piped_stdin_is_appended_to_the_prompt(modelctl: Runner) -> None:
    result = modelctl("run", REF, "Answer in one short sentence.", *FAST, "--temperature", "0", input=QUESTION)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_stdin_alone_is_the_prompt(modelctl: Runner) -> None:
    result = modelctl("run", REF, *FAST, *SHORT, input=QUESTION + "\n")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_json_prints_a_chat_completion(modelctl: Runner) -> None:
    result = modelctl("run", REF, QUESTION, *FAST, *SHORT, "--seed", "7", "--max-tokens", "32", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["object"] == "chat.completion"
    assert doc["model"] == REF
    choice = doc["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < doc["usage"]["completion_tokens"] <= 32
    assert doc["usage"]["total_tokens"] == doc["usage"]["prompt_tokens"] + doc["usage"]["completion_tokens"]


def test_max_tokens_and_verbose_stats(modelctl: Runner) -> None:
    result = modelctl("run", REF, "Tell me a long story.", *FAST, "--max-tokens", "5", "--seed", "1", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "5 tokens" in result.stderr
    assert "tokens/s" in result.stderr and "time to first token" in result.stderr
    assert len(result.stdout.split()) <= 8


def test_debug_shows_the_load_log(modelctl: Runner) -> None:
    result = modelctl("--debug", "run", REF, "Hi", *FAST, "--max-tokens", "2")
    assert result.returncode == 0, result.stderr
    assert LOAD_LOG in result.stderr


def test_no_pull_of_an_absent_model_exits_3(modelctl: Runner) -> None:
    result = modelctl("run", "--no-pull", "ai/absent-model:1B", "Hi")
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelctl: error: ")
    assert "not in the local store" in lines[0]


def test_a_model_that_does_not_fit_exits_6_without_loading(modelctl: Runner) -> None:
    # 16M tokens of f16 KV cache for SmolLM2 (30 layers x 3 KV heads x 64 x 2 x 2 bytes = 22.5 KiB a token)
    # is 360 GiB: no test machine has that, so the fit check refuses before llama.cpp sees the file.
    result = modelctl("--debug", "run", REF, "Hi", "--ctx-size", str(1 << 24), "--threads", "2")
    assert result.returncode == 6, result.stderr
    assert "does not fit" in result.stderr
    assert "--force" in result.stderr
    assert LOAD_LOG not in result.stderr  # llama.cpp never started loading it
    assert result.stdout == ""


def test_empty_prompt_is_a_usage_error(modelctl: Runner) -> None:
    result = modelctl("run", REF, "   ", *FAST)
    assert result.returncode == 2
    assert "nothing to answer" in result.stderr


def test_cache_type_reaches_llama_cpp_and_matches_the_fit_check(modelctl: Runner) -> None:
    # run must load with the settings the fit check judged: a q8_0 cache (and the flash attention it needs).
    fit = modelctl("fit", REF, "--ctx-size", "1024", "--cache-type", "q8_0", "--json")
    assert fit.returncode == 0, fit.stderr
    predicted = json.loads(fit.stdout)["memory"]["kv_cache"] / (1 << 20)
    result = modelctl("--debug", "run", REF, "Hi", *FAST, "--cache-type", "q8_0", "--max-tokens", "2")
    assert result.returncode == 0, result.stderr
    assert "flash_attn            = enabled" in result.stderr
    kv_lines = [line for line in result.stderr.splitlines() if "KV buffer size" in line]
    assert kv_lines, result.stderr[-2000:]
    loaded = float(kv_lines[0].split("=")[1].split()[0])
    assert abs(loaded - predicted) < 0.1, (loaded, predicted)


def test_unknown_cache_type_is_a_usage_error(modelctl: Runner) -> None:
    result = modelctl("run", REF, "Hi", "--cache-type", "q2_k")
    assert result.returncode == 2, result.stderr
    assert "unknown cache type" in result.stderr and len(result.stderr.strip().splitlines()) == 1
