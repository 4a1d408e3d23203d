"""The allocation rules that changed between llama.cpp versions, as one value.

The fit predicts for the llama.cpp that llama-cpp-python bundles (:data:`BUNDLED`). The older rules exist so that a
load log published from an older build can be replayed: with the build's rules set back, every other buffer must
still come out right, which checks the rest of the model against real GPUs where no GPU is at hand
(benchmarks/gpu_logs.py). Each field names the llama.cpp pull request that changed it.
"""

from __future__ import annotations

from dataclasses import dataclass

KV_PAD = 256
"""The bundled llama.cpp pads every KV cache to a multiple of this many cells."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LlamaBuild:
    set_rows: bool = True
    """The KV cache is written with ``ggml_set_rows`` (PR 14959, July 2025), whose row indices are graph inputs: one
    per token for K, one per value for a transposed V. Before, ``ggml_cpy`` into views needed no indices."""
    kv_pad_no_flash: int = KV_PAD
    """Cells a cache is padded to without flash attention. Before PR 17046 (November 2025): 32 (256 with it)."""
    swa_cache: bool = True
    """Sliding-window layers keep a cache of the window only unless ``swa_full`` (the iSWA cache, PR 13194, May
    2025). Before, every layer kept the whole context."""
    one_output_per_seq: bool = False
    """The graph is reserved for one output per sequence (llama-server sets ``n_outputs_max`` so since PR 23861);
    llama-cpp-python leaves it, so llama.cpp reserves logits for every token of the batch. Not a version's rule
    but the program's: replaying it checks the layers' steps of a server's log, which its logits no longer hide."""
    mla_v: bool = False
    """The MLA cache keeps a V part (``kv_lora_rank`` values per cell) beside K. Before the V-less cache (PR 19067)
    it did; the bundled build reads V as a view of K."""

    def kv_pad(self, flash_attention: bool) -> int:
        """Cells the cache is padded to for this load."""
        return KV_PAD if flash_attention else self.kv_pad_no_flash

    @classmethod
    def from_names(cls, rules: dict[str, object]) -> LlamaBuild:
        """Rules from a record's ``{"set_rows": false, ...}``; an unknown name is an error, not ignored."""
        known = {"set_rows", "kv_pad_no_flash", "swa_cache", "one_output_per_seq", "mla_v"}
        unknown = set(rules) - known
        if unknown:
            raise ValueError(f"unknown llama.cpp build rule(s) {sorted(unknown)} (known: {sorted(known)})")
        return cls(**rules)  # type: ignore[arg-type]


BUNDLED = LlamaBuild()
"""The rules of the llama.cpp in llama-cpp-python 0.3.36."""
