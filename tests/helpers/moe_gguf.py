"""A tiny but loadable MoE model (llama architecture with routed experts, as Mixtral is stored): random weights,
a token list, ``ffn_gate_inp`` and ``ffn_{gate,up,down}_exps`` in every layer. Small enough to write in a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from helpers.ggufs import LlamaShape, _add_metadata

Q4_0 = GGMLQuantizationType.Q4_0


def tiny_moe(
    path: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 256,
    n_ff: int = 512,
    n_expert: int = 4,
    n_expert_used: int = 2,
    tensor_type: GGMLQuantizationType = Q4_0,
    seed: int = 0,
) -> Path:
    """Write the model to ``path`` (matrices in ``tensor_type``, norms and the router in F32); return ``path``."""
    shape = LlamaShape(n_layer=n_layer, n_embd=n_embd, n_head=4, n_head_kv=2, n_ff=n_ff, vocab=256)
    rng = np.random.default_rng(seed)

    def weight(*dims: int) -> np.ndarray:
        return quantize(rng.standard_normal(dims, dtype=np.float32) * 0.02, tensor_type)

    kv = shape.n_head_kv * (n_embd // shape.n_head)
    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", weight(shape.vocab, n_embd))]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32)),
            (b + "attn_q.weight", weight(n_embd, n_embd)),
            (b + "attn_k.weight", weight(kv, n_embd)),
            (b + "attn_v.weight", weight(kv, n_embd)),
            (b + "attn_output.weight", weight(n_embd, n_embd)),
            (b + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32)),
            (b + "ffn_gate_inp.weight", rng.standard_normal((n_expert, n_embd), dtype=np.float32)),
            (b + "ffn_gate_exps.weight", weight(n_expert, n_ff, n_embd)),
            (b + "ffn_up_exps.weight", weight(n_expert, n_ff, n_embd)),
            (b + "ffn_down_exps.weight", weight(n_expert, n_embd, n_ff)),
        ]
    tensors += [("output_norm.weight", np.ones(n_embd, dtype=np.float32)), ("output.weight", weight(256, n_embd))]
    writer = GGUFWriter(path, "llama")
    _add_metadata(writer, shape, "tiny-moe", 2 if tensor_type == Q4_0 else 0)
    writer.add_expert_count(n_expert)
    writer.add_expert_used_count(n_expert_used)
    for name, data in tensors:
        writer.add_tensor(name, data, raw_dtype=tensor_type if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
