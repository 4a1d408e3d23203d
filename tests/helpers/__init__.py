"""Test helpers that stand in for the outside world: real registry processes, a token service, a fault proxy,
an independent OCI image-layout writer (pushed with skopeo) and tiny GGUF models.

Nothing here imports modelctl: fixtures are built with independent code, so a bug in modelctl cannot hide
itself. ``tests/`` is on ``sys.path`` (pytest's rootdir-relative conftest import): tests import
``helpers.<module>``.
"""
