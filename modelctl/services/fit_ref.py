"""Moved: the fit verb is :mod:`modelctl.services.fit`, ``card_variants`` is in :mod:`modelctl.fit.synthetic`.

Kept only until ``services/run.py`` imports ``card_variants`` from its new place; then delete this module.
"""

from modelctl.fit.synthetic import card_variants

__all__ = ["card_variants"]
