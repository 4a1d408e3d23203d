"""The store every test here starts from: an empty OCI layout in the test's own directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.store import Layout


@pytest.fixture
def store(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.ensure()
    return layout
