"""The catalog's sorted repository listing: walked once, kept current by additions, same tuple until one."""

from __future__ import annotations

from registry.catalog import RepositoryList


def test_walked_once_then_kept_current() -> None:
    walks: list[int] = []

    def walk() -> list[str]:
        walks.append(1)
        return ["b/x", "a/y", "b/x"]

    listing = RepositoryList(walk)
    listing.add("z/early")  # before the first walk: the walk will find it, nothing to do
    assert listing.names() == ("a/y", "b/x")
    first = listing.names()
    assert listing.names() is first, "the listing was rebuilt without a change"
    listing.add("a/z")
    listing.add("a/y")  # known already
    assert listing.names() == ("a/y", "a/z", "b/x")
    assert len(walks) == 1
