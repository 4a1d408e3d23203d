"""The load settings ``run`` uses, in one place, so the fit check describes the real load."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_CTX = 4096
"""Without --ctx-size, run uses min(trained context, 4096): a 128K default context is what makes models not fit."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    n_ctx: int | None = None
    """None: min(the model's trained context, DEFAULT_MAX_CTX)."""
    n_batch: int = 512
    n_ubatch: int = 512
    cache_type: str = "f16"
    gpu_layers: int | None = None
    """None: auto (as many as fit)."""
    n_seq: int = 1

    def resolved_ctx(self, trained: int | None) -> int:
        if self.n_ctx:
            return self.n_ctx
        return min(trained or DEFAULT_MAX_CTX, DEFAULT_MAX_CTX)
