"""Reference parsing and normalisation (FACTS.md section 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl import reference
from modelctl.errors import InvalidReference
from modelctl.reference import Reference, parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llama3.1", "docker.io/ai/llama3.1:latest"),
        ("ai/llama3.1", "docker.io/ai/llama3.1:latest"),
        ("ai/llama3.1:8B-Q4_K_M", "docker.io/ai/llama3.1:8B-Q4_K_M"),
        ("AI/Llama3.1:8B-Q4_K_M", "docker.io/ai/llama3.1:8B-Q4_K_M"),
        ("docker.io/ai/smollm2", "docker.io/ai/smollm2:latest"),
        ("index.docker.io/ai/smollm2:135M", "docker.io/ai/smollm2:135M"),
        ("registry-1.docker.io/ai/smollm2", "docker.io/ai/smollm2:latest"),
        ("smollm2", "docker.io/ai/smollm2:latest"),
        ("localhost/models/x", "localhost/models/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("127.0.0.1:5000/ai/smollm2:135M-Q4_1", "127.0.0.1:5000/ai/smollm2:135M-Q4_1"),
        ("ghcr.io/org/team/model:v1", "ghcr.io/org/team/model:v1"),
        ("[::1]:5000/ai/x", "[::1]:5000/ai/x:latest"),
        (f"ai/smollm2@{DIGEST}", f"docker.io/ai/smollm2@{DIGEST}"),
        (f"ai/smollm2:135M@{DIGEST}", f"docker.io/ai/smollm2:135M@{DIGEST}"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:latest"),
        ("huggingface.co/TheBloke/Foo-GGUF:Q4_K_M", "hf.co/TheBloke/Foo-GGUF:Q4_K_M"),
        ("ollama://llama3.1:8b", "registry.ollama.ai/library/llama3.1:8b"),
        ("registry.ollama.ai/library/llama3.1", "registry.ollama.ai/library/llama3.1:latest"),
        ("a__b/c-d--e.f", "docker.io/a__b/c-d--e.f:latest"),
    ],
)
def test_normalises(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


def test_dotted_first_component_is_a_host() -> None:
    assert parse("my.registry/x").registry == "my.registry"
    with pytest.raises(InvalidReference, match="bad registry host"):
        parse("0_0.0/0")


def test_parts() -> None:
    ref = parse("127.0.0.1:5000/ai/smollm2:135M-Q4_1")
    assert ref == Reference("127.0.0.1:5000", "ai/smollm2", "135M-Q4_1", None)
    assert ref.identifier == "135M-Q4_1"
    assert parse(f"ai/x@{DIGEST}").identifier == DIGEST
    assert parse("ai/x:1").short == "ai/x:1"
    assert parse("hf.co/a/b").is_hugging_face
    assert parse("ollama://gemma").is_ollama


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "invalid reference"),
        (" ai/x", "invalid reference"),
        ("ai/x:", "bad tag"),
        ("ai/x:-bad", "bad tag"),
        ("ai/x:" + "a" * 129, "bad tag"),
        ("ai/x@sha256:abc", "bad digest"),
        ("ai/x@md5:" + "a" * 32, "bad digest"),
        ("ai//x", "bad name component"),
        ("ai/x_", "bad name component"),
        ("ai/../x", "bad name component"),
        ("ai/x y", "bad name component"),
        ("https://example.com/ai/x", "URL schemes"),
        ("hf.co/onlyone", "hf.co/<org>/<repo>"),
        ("example.com:99999999/x", "bad registry host"),
        ("localhost:99999/ai/x", "port 99999 of 'localhost:99999' is out of range"),
        ("127.0.0.1:65536/ai/x", "out of range"),
        ("[::1]:0/ai/x", "out of range"),
        ("a/" + "b" * 300, "longer than"),
    ],
)
def test_rejects_with_helpful_message(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_host = st.sampled_from(
    ["", "docker.io/", "localhost:5000/", "127.0.0.1:8080/", "ghcr.io/", "Reg.Example.com/"]
)
_digest = st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True)


@given(
    host=_host,
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | _digest,
    upper=st.booleans(),
)
def test_normalising_is_idempotent_and_round_trips(
    host: str, path: list[str], tag: str | None, digest: str | None, upper: bool
) -> None:
    if not host and "." in path[0]:
        host = "docker.io/"  # without a host, a first component with a dot *is* the host (Docker's rule)
    text = host + "/".join(p.upper() if upper else p for p in path)
    if tag:
        text += ":" + tag
    if digest:
        text += "@" + digest
    ref = parse(text)
    assert parse(str(ref)) == ref
    assert str(parse(str(ref))) == str(ref)
    if tag:
        assert ref.tag == tag  # tags keep their case
    assert ref.repository == ref.repository.lower()


@pytest.mark.parametrize("host", ["localhost:1", "127.0.0.1:65535", "[::1]:5000", "[::1]", "reg.example"])
def test_ports_in_range(host: str) -> None:
    assert reference.registry_host(host) == host
    assert parse(f"{host}/ai/x").registry == host.lower()
