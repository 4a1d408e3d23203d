"""The local store: an OCI image layout with full references as tags (see :mod:`modelctl.store.layout`)."""

from modelctl.store.directory import EMPTY_INDEX, LAYOUT_VERSION, TMP_DIR
from modelctl.store.gc import DiskUsage
from modelctl.store.graph import MAX_MANIFEST
from modelctl.store.layout import Layout

__all__ = ["EMPTY_INDEX", "LAYOUT_VERSION", "MAX_MANIFEST", "TMP_DIR", "DiskUsage", "Layout"]
