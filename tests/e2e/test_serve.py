"""``modelctl serve`` answered by the official ``openai`` client, with the real SmolLM2-135M model."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

REF = "ai/smollm2:135M-Q4_1"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]


@pytest.fixture()
def server(command: list[str], env: dict[str, str], port: int, tmp_path: Path) -> Iterator[str]:
    """``modelctl serve`` on a free port; yields the API's base URL once /v1/models answers."""
    log = (tmp_path / "serve.log").open("w+")
    args = ["serve", REF, "--port", str(port), "--ctx-size", "1024", "--threads", "2", "--embeddings"]
    proc = subprocess.Popen([*command, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"modelctl serve exited with {proc.returncode}: {log.read()}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("modelctl serve did not answer within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_openai_client(server: str) -> None:
    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)

    assert [m.id for m in client.models.list().data] == [REF]

    answer = client.chat.completions.create(model=REF, messages=QUESTION, temperature=0)  # type: ignore[arg-type]
    assert answer.object == "chat.completion"
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model=REF,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1  # streamed token by token
    assert "Paris" in "".join(pieces)

    completion = client.completions.create(model=REF, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in completion.choices[0].text

    embeddings = client.embeddings.create(model=REF, input=["hello world", "goodbye"])
    assert len(embeddings.data) == 2
    vector = embeddings.data[0].embedding
    assert len(vector) == 576 and all(isinstance(x, float) for x in vector)  # SmolLM2's width, mean-pooled


def test_serve_refuses_a_port_in_use(command: list[str], env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*command, "serve", REF, "--port", str(port), "--ctx-size", "1024"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr
