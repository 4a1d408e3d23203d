"""What llama.cpp allocates for a model and settings (FACTS.md section 5), calibrated on llama.cpp's own log lines.

CPU only for now (GPU offload splits the same sums by layer). Buffers: model weights; KV cache, per layer
``n_head_kv * (k_len * size(K) + v_len * size(V))`` bytes per cell, cells = n_ctx padded to 256; output (logits of
one sequence) plus llama-cpp-python's numpy ``scores`` (n_batch x n_vocab float32, host RAM); compute, reserved for
an n_ubatch batch: the larger of the logits tensor and the attention scores, plus activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelctl.fit.settings import RunSettings
from modelctl.gguf import GGUFHeader

CACHE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
KV_PAD = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    weights: int
    kv_cache: int
    output: int
    compute: int
    host_extra: int
    """RAM that llama.cpp never reports (llama-cpp-python's scores array)."""
    n_ctx: int
    n_layer: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.output + self.compute + self.host_extra


def _as_list(value: object, n: int, default: int) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value][:n] + [default] * max(0, n - len(value))
    return [int(value) if isinstance(value, int) else default] * n


def estimate(headers: Sequence[GGUFHeader], settings: RunSettings, *, n_ctx: int | None = None) -> Estimate:
    first = headers[0]
    n_layer = int(first.arch("block_count", 0) or 0)
    n_embd = int(first.arch("embedding_length", 0) or 0)
    n_head_list = _as_list(first.arch("attention.head_count"), n_layer, 0)
    n_head = max(n_head_list) if n_head_list else 0
    kv_heads = _as_list(first.arch("attention.head_count_kv", n_head), n_layer, n_head)
    head_dim = n_embd // n_head if n_head else 0
    k_len = int(first.arch("attention.key_length", head_dim) or head_dim)
    v_len = int(first.arch("attention.value_length", head_dim) or head_dim)
    trained = first.arch("context_length")
    ctx = n_ctx or settings.resolved_ctx(int(trained) if isinstance(trained, int) else None)
    cells = -(-ctx // KV_PAD) * KV_PAD
    size = CACHE_BYTES.get(settings.cache_type, 2.0)
    per_cell = sum(h * (k_len + v_len) for h in kv_heads) * size
    kv = int(per_cell * cells)
    n_vocab = first.n_vocab
    weights = sum(t.n_bytes for h in headers for t in h.tensors)
    output = n_vocab * 4 * settings.n_seq
    ub = settings.n_ubatch
    logits = ub * n_vocab * 4
    attention = ub * cells * n_head * 4 + cells * ub * 4
    compute = max(logits, attention) + 6 * ub * n_embd * 4
    host_extra = settings.n_batch * n_vocab * 4
    return Estimate(
        weights=weights, kv_cache=kv, output=output, compute=compute, host_extra=host_extra, n_ctx=ctx, n_layer=n_layer
    )
