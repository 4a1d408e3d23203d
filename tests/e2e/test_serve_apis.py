"""``modelctl serve`` with no reference: every model in the store, answered by the real ``openai``, ``ollama`` and
``anthropic`` client libraries, with the real SmolLM2-135M (two tags, two models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from e2e.serving import FAST, FULL_REF, REF, SECOND, Server, serve, two_models

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = two_models(tmp_path_factory.mktemp("serve-apis"))
    with serve(home, *FAST, log=home / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_are_the_store(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list().data) == sorted([REF, SECOND])


def test_openai_chat_names_the_model_as_asked(client: openai.OpenAI, server: Server) -> None:
    model_id = httpx.get(f"{server.url}/api/tags").json()["models"][0]["digest"][:12]
    for name in (REF, FULL_REF, model_id):
        answer = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=8)  # type: ignore[arg-type]
        assert answer.model == name
        assert "Paris" in (answer.choices[0].message.content or "")
        assert answer.usage is not None and answer.usage.completion_tokens > 0
    # three names of one model: it was loaded once
    assert [e for e in server.events() if e[0] == "loaded"] == [("loaded", REF)]


def test_openai_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SECOND,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1  # token by token
    assert "Paris" in "".join(pieces)
    assert all(c.model == SECOND for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_completions_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=REF, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert "Paris" in completion.choices[0].text
    assert completion.model == REF

    embeddings = client.embeddings.create(model=REF, input=["hello world", "goodbye"])
    assert len(embeddings.data) == 2
    first, second = (e.embedding for e in embeddings.data)
    assert len(first) == 576  # SmolLM2's width, mean-pooled over the tokens
    assert abs(sum(x * x for x in first) - 1.0) < 1e-3  # unit length
    assert first != second
    floats = client.embeddings.create(model=REF, input="hello world", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(first, abs=1e-5)


def test_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ai/absent:1", messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
    assert "not in the local store" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=REF, messages=QUESTION, temperature=-1)  # type: ignore[arg-type]
    assert "temperature" in str(bad.value)


def test_ollama_client(server: Server) -> None:
    client = ollama.Client(host=server.url)
    assert client._client.get("/api/version").json()["version"]
    assert sorted(m.model or "" for m in client.list().models) == sorted([REF, SECOND])
    shown = client.show(REF)
    assert shown.details is not None and shown.details.quantization_level == "Q4_1"

    answer = client.chat(model=REF, messages=QUESTION, options={"temperature": 0, "num_predict": 8})
    assert answer.done and "Paris" in (answer.message.content or "")
    assert answer.model == REF and (answer.eval_count or 0) > 0

    parts = list(
        client.chat(model=SECOND, messages=QUESTION, stream=True, options={"temperature": 0, "num_predict": 8})
    )
    assert len(parts) > 2 and parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert "Paris" in "".join(p.message.content or "" for p in parts)

    generated = client.generate(
        model=REF, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 6}
    )
    assert "Paris" in (generated.response or "")

    embedded = client.embed(model=REF, input=["hello", "world"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 576

    loaded = {m.model: m for m in client.ps().models}
    assert set(loaded) >= {REF, SECOND}
    assert loaded[REF].context_length == 512 and (loaded[REF].size or 0) > 0

    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="ai/absent:1", messages=QUESTION)
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as refused:  # not started with --allow-delete
        client._request_raw("DELETE", "/api/delete", json={"model": SECOND})
    assert refused.value.status_code == 403 and "--allow-delete" in refused.value.error


def test_anthropic_client(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    message = client.messages.create(
        model=REF,
        max_tokens=8,
        messages=[{"role": "user", "content": QUESTION[0]["content"]}],
        extra_body={"temperature": 0},  # this client version has no temperature argument; the API takes it
    )
    assert message.model == REF and message.role == "assistant"
    assert "Paris" in "".join(b.text for b in message.content if b.type == "text")
    assert message.usage.output_tokens > 0 and message.stop_reason in ("end_turn", "max_tokens")

    with client.messages.stream(
        model=SECOND,
        max_tokens=8,
        extra_body={"temperature": 0},
        system="You answer in one word.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    assert final.model == SECOND and final.usage.output_tokens > 0

    counted = client.messages.count_tokens(model=REF, messages=[{"role": "user", "content": "Hello there"}])
    assert counted.input_tokens > 2

    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="ai/absent:1", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])


def test_bad_requests_are_400_with_the_field_named(server: Server) -> None:
    cases = [
        ("/v1/chat/completions", {"model": REF}, "messages"),
        ("/v1/chat/completions", {"model": REF, "messages": QUESTION, "max_tokens": "many"}, "max_tokens"),
        ("/api/chat", {"model": REF, "messages": QUESTION, "keep_alive": "soon"}, "keep_alive"),
        ("/v1/messages", {"model": REF, "messages": QUESTION}, "max_tokens"),
        ("/v1/embeddings", {"model": REF, "input": [1, 2]}, "input"),
    ]
    for path, body, field in cases:
        answer = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert answer.status_code == 400, (path, answer.text)
        assert field in answer.text, (path, answer.text)
    not_json = httpx.post(f"{server.url}/v1/chat/completions", content=b"{", timeout=60)
    assert not_json.status_code == 400 and "not JSON" in not_json.text
    for hostile in (b'{"a":' * 100_000, b"[" * 100_000):  # the bounded parser: a 400, never a RecursionError's 500
        deep = httpx.post(f"{server.url}/v1/chat/completions", content=hostile, timeout=60)
        assert deep.status_code == 400 and "request body" in deep.text, deep.text


def test_served_log_says_what_loaded(server: Server, tmp_path: Path) -> None:
    for model in (REF, SECOND):  # each is used here, whatever ran before (alone, this test must hold too)
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).status_code == 200
    assert ("loaded", REF) in server.events() and ("loaded", SECOND) in server.events()
