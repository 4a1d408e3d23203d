"""``modelctl serve``'s guard with real clients: the API key on every endpoint, loopback by default, no
cross-origin pages unless allowed, no DNS-rebound Host, and ``/api/pull`` / ``/api/delete`` only when enabled."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from e2e.conftest import MODELCTL, ROOT, clean_env
from e2e.serving import FAST, REF, SECOND, Server, serve, two_models
from helpers.servers import start_ours
from helpers.servers import stop as stop_registry

KEY = "s3cret-key"
ALLOWED = "http://allowed.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = two_models(tmp_path_factory.mktemp("serve-security"))
    args = ("--api-key", KEY, "--cors-origin", ALLOWED, "--allow-delete")
    with serve(home, *FAST, *args, log=home / "serve.log") as running:
        yield running


ENDPOINTS = [
    ("GET", "/", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": REF, "messages": [{"role": "user", "content": "Hi"}]}),
    ("POST", "/v1/embeddings", {"model": REF, "input": "Hi"}),
    ("POST", "/v1/messages", {"model": REF, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}),
    ("GET", "/api/tags", None),
    ("POST", "/api/chat", {"model": REF, "messages": [{"role": "user", "content": "Hi"}]}),
    ("GET", "/api/ps", None),
    ("GET", "/api/version", None),
    ("DELETE", "/api/delete", {"model": SECOND}),
    ("GET", "/modelctl/ps", None),
    ("POST", "/modelctl/stop", {"model": REF}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_every_endpoint_needs_the_key(server: Server, method: str, path: str, body: object) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
        answer = httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=60)
        assert answer.status_code == 401, (path, headers, answer.text)
    challenge = httpx.get(f"{server.url}/", timeout=60).headers["WWW-Authenticate"]
    assert challenge == 'Basic realm="modelctl"'  # a browser asks for it on the chat page


def test_the_key_works_however_each_client_sends_it(server: Server) -> None:
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{server.url}/api/tags", headers={"x-api-key": KEY}).status_code == 200
    basic = base64.b64encode(f"anyone:{KEY}".encode()).decode()
    page = httpx.get(f"{server.url}/", headers={"Authorization": f"Basic {basic}"})
    assert page.status_code == 200 and '<select id="model"' in page.text

    assert {m.id for m in openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY).models.list().data} >= {REF}
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert {m.model for m in ollama.Client(host=server.url, headers=bearer).list().models} >= {REF}
    client = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
    message = client.messages.create(model=REF, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert message.model == REF


def test_pages_of_other_origins_are_refused_unless_allowed(server: Server) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    evil = httpx.get(f"{server.url}/v1/models", headers={**auth, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "--cors-origin http://evil.example" in evil.text
    assert "Access-Control-Allow-Origin" not in evil.headers
    # a "simple" cross-origin POST (no preflight) is refused too, before it reaches a model
    simple = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b'{"model": "x"}',
        headers={**auth, "Origin": "http://evil.example", "Content-Type": "text/plain"},
    )
    assert simple.status_code == 403

    allowed = httpx.get(f"{server.url}/v1/models", headers={**auth, "Origin": ALLOWED})
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    preflight = httpx.options(
        f"{server.url}/v1/chat/completions",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    same = httpx.get(f"{server.url}/v1/models", headers={**auth, "Origin": server.url})
    assert same.status_code == 200 and "Access-Control-Allow-Origin" not in same.headers  # the page itself


def test_a_dns_rebound_host_is_refused(server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    answer = httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}", "Host": f"attacker.example:{port}"}
    )
    assert answer.status_code == 403 and "local Host" in answer.text
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        ok = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}", "Host": host})
        assert ok.status_code == 200


def test_delete_when_allowed_and_pull_when_not(server: Server) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull(REF)
    assert refused.value.status_code == 403 and "--allow-pull" in refused.value.error
    assert client.delete(SECOND).status == "success"
    assert {m.model for m in client.list().models} == {REF}
    with pytest.raises(ollama.ResponseError) as gone:
        client.chat(model=SECOND, messages=[{"role": "user", "content": "Hi"}])
    assert gone.value.status_code == 404


def test_serving_beyond_loopback_needs_a_key(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    result = subprocess.run(
        [*MODELCTL, "serve", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "would let anyone on the network use it" in result.stderr and "--api-key" in result.stderr


def test_pull_streams_progress_when_allowed(tmp_path: Path) -> None:
    source = two_models(tmp_path / "source")
    registry, url, _ = start_ours(tmp_path / "registry")
    try:
        host = url.removeprefix("http://")
        target = f"{host}/ai/smollm2:135M-Q4_1"
        env = clean_env(source)
        for args in (("tag", REF, target), ("push", target)):
            done = subprocess.run([*MODELCTL, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
            assert done.returncode == 0, done.stderr
        empty = tmp_path / "empty"
        with serve(empty, *FAST, "--allow-pull", log=tmp_path / "serve.log") as server:
            client = ollama.Client(host=server.url)
            events = list(client.pull(target, stream=True))
            assert events[0].status == "pulling manifest" and events[-1].status == "success"
            progress = [e for e in events if e.digest]
            assert progress and progress[-1].completed == progress[-1].total and (progress[-1].total or 0) > 90 << 20
            assert [m.model for m in client.list().models] == [target]
            answer = client.generate(model=target, prompt="Hi", options={"num_predict": 2})
            assert answer.done
    finally:
        stop_registry(registry)
