"""registry.names: the spec's grammar for names, tags and digests, and raw `/v2/` path parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry import names

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "name",
    ["a", "ai/smollm2", "library/ubuntu", "a-b/c.d/e__f", "a--b", "x" * 255, "0/1/2/3", "my_repo/a.b-c"],
)
def test_valid_names(name: str) -> None:
    assert names.is_name(name)
    assert names.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "Upper/case",
        "..",
        "a/..",
        "../a",
        "a/../b",
        "./a",
        "/abs",
        "a/",
        "a//b",
        "a\\b",
        "a%2fb",
        "a/%2e%2e",
        "-a",
        "a-",
        "a.",
        "a___b",
        "a/_b",
        "a b",
        "a\x00b",
        "x" * 256,
    ],
)
def test_invalid_names(name: str) -> None:
    assert not names.is_name(name)
    with pytest.raises(names.GrammarError) as err:
        names.check_name(name)
    assert err.value.code == "NAME_INVALID"


@pytest.mark.parametrize("tag", ["latest", "135M-Q4_1", "v1.0", "_x", "A" * 128, "a.."])
def test_valid_tags(tag: str) -> None:
    assert names.is_tag(tag)


@pytest.mark.parametrize("tag", ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "A" * 129, "a b", "a%2f"])
def test_invalid_tags(tag: str) -> None:
    assert not names.is_tag(tag)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("sha256:" + "A" * 64, "invalid digest"),
        ("sha256:" + "a" * 63, "invalid digest"),
        ("sha256:../../etc/passwd", "invalid digest"),
        ("sha512:" + "a" * 127, "invalid digest"),
        ("sha384:" + "a" * 96, "unsupported digest algorithm"),
        ("md5", "invalid digest"),
        ("", "invalid digest"),
    ],
)
def test_invalid_digests(digest: str, message: str) -> None:
    with pytest.raises(names.GrammarError) as err:
        names.check_digest(digest)
    assert err.value.code == "DIGEST_INVALID"
    assert message in err.value.message


def test_reference_is_tag_or_digest() -> None:
    assert names.check_reference("latest") == "latest"
    assert names.check_reference(DIGEST) == DIGEST
    with pytest.raises(names.GrammarError) as err:
        names.check_reference("sha256:nothex")
    assert err.value.code == "DIGEST_INVALID"
    with pytest.raises(names.GrammarError) as err:
        names.check_reference("..")
    assert err.value.code == "NAME_INVALID"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/", names.Route("ping")),
        ("/v2", names.Route("ping")),
        ("/v2/_catalog?n=1", names.Route("catalog")),
        ("/v2/ai/x/manifests/latest", names.Route("manifest", "ai/x", "latest")),
        (f"/v2/ai/x/manifests/{DIGEST}", names.Route("manifest", "ai/x", DIGEST)),
        (f"/v2/a/blobs/{DIGEST}", names.Route("blob", "a", DIGEST)),
        ("/v2/a/b/blobs/uploads/", names.Route("uploads", "a/b")),
        (f"/v2/a/b/blobs/uploads/?digest={DIGEST}", names.Route("uploads", "a/b")),
        ("/v2/a/b/blobs/uploads/0123", names.Route("upload", "a/b", "0123")),
        ("/v2/a/tags/list?n=2&last=x", names.Route("tags", "a")),
        (f"/v2/a/referrers/{DIGEST}", names.Route("referrers", "a", DIGEST)),
        # A repository may contain a component spelled like an endpoint: the last marker wins.
        ("/v2/blobs/manifests/manifests/v1", names.Route("manifest", "blobs/manifests", "v1")),
        ("/v2/a/nothing", None),
        ("/other", None),
    ],
)
def test_parse_path(path: str, expected: names.Route | None) -> None:
    assert names.parse_path(path) == expected


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v2/../../etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/a/..%2f..%2fetc/manifests/latest", "NAME_INVALID"),
        ("/v2/%2e%2e/blobs/" + DIGEST, "NAME_INVALID"),
        ("/v2//etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/a\\..\\b/manifests/latest", "NAME_INVALID"),
        ("/v2/a/./b/manifests/latest", "NAME_INVALID"),
        ("/v2/../../etc/passwd", "NAME_INVALID"),
        ("/v2/a/manifests/..", "NAME_INVALID"),
        ("/v2/a/manifests/.hidden", "NAME_INVALID"),
        ("/v2/a/blobs/sha256:..", "DIGEST_INVALID"),
        ("/v2/a/blobs/latest", "DIGEST_INVALID"),
        ("/v2/a/referrers/sha256:xyz", "DIGEST_INVALID"),
        ("/v2/A/tags/list", "NAME_INVALID"),
    ],
)
def test_parse_path_rejects_traversal_and_bad_grammar(path: str, code: str) -> None:
    with pytest.raises(names.GrammarError) as err:
        names.parse_path(path)
    assert err.value.code == code


_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:\.|_|__|-{1,2})[a-z0-9]{1,5}){0,2}", fullmatch=True)


@given(st.lists(_component, min_size=1, max_size=4))
def test_generated_names_are_accepted(components: list[str]) -> None:
    name = "/".join(components)
    assert names.is_name(name)
    assert names.parse_path(f"/v2/{name}/tags/list") == names.Route("tags", name)


@given(
    st.text(st.characters(exclude_characters="?#"), min_size=1, max_size=40),
    st.sampled_from(["..", "%2e", "\\", "//", "/."]),
)
def test_names_with_traversal_pieces_never_pass(text: str, piece: str) -> None:
    name = text + piece + text
    assert not names.is_name(name) or ".." not in name
    route = None
    try:
        route = names.parse_path(f"/v2/{name}/manifests/latest")
    except names.GrammarError:
        return
    assert route is None or names.is_name(route.name)
    assert route is None or all(part not in ("", ".", "..") for part in route.name.split("/"))
