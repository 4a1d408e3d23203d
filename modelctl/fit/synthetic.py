"""Synthetic GGUF headers: the header a model card's variant would have, built as llama.cpp's quantiser would
(its tensor names and shapes, the per-tensor types it picks), so a card's ``size`` and ``vram`` come from the fit
estimator instead of being typed by hand, and the fit check can suggest a card's other variants.

:func:`synthetic_header` builds the header from the card's ``shape`` and quantisation and :func:`computed` runs
the estimator on it; ``scripts/update_cards.py`` writes the results into the cards, and a unit test fails when a
card and the estimator disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from modelctl import cards, reference
from modelctl.cpu import WeightBuffers
from modelctl.errors import CardError, ModelctlError
from modelctl.fit.estimate import estimate
from modelctl.fit.plan import VariantInfo
from modelctl.fit.settings import RunSettings
from modelctl.gguf import GGUFHeader, TensorInfo, row_bytes, type_sizes

# ggml tensor types (gguf.GGMLQuantizationType values)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, BF16 = 10, 11, 12, 13, 14, 20, 30

QUANTIZATIONS: dict[str, tuple[int, int]] = {
    # name -> (llama.cpp file type, the default tensor type of that file type)
    "F32": (0, F32),
    "F16": (1, F16),
    "BF16": (32, BF16),
    "Q4_0": (2, Q4_0),
    "Q4_1": (3, Q4_1),
    "Q8_0": (7, Q8_0),
    "Q5_0": (8, Q5_0),
    "Q5_1": (9, Q5_1),
    "Q4_K_S": (14, Q4_K),
    "Q4_K_M": (15, Q4_K),
    "Q5_K_S": (16, Q5_K),
    "Q5_K_M": (17, Q5_K),
    "Q6_K": (18, Q6_K),
}
"""Quantisations the synthetic header knows (what the ``ai/`` namespace publishes)."""

_FALLBACK = {Q2_K: IQ4_NL, Q3_K: IQ4_NL, Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}
"""llama.cpp's replacement when a row length is not a multiple of a k-quant's 256-element block."""

HEADER_BYTES_PER_TOKEN = 36
"""Approximate GGUF header bytes per vocabulary entry (token strings, scores, types, merges): SmolLM2's header
is 1.79 MB for 49152 tokens. Only the ``size`` figure uses it; memory estimates do not depend on it."""
ALIGNMENT = 32


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in the *_M mixes: the first and last eighth, and every
    third layer in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _block_size(ggml_type: int) -> int:
    return type_sizes(ggml_type)[0]


def tensor_type(name: str, ne0: int, *, quantization: str, layer: int, shape: cards.Shape) -> int:
    """The ggml type llama.cpp's quantiser gives a 2-D tensor (``llama_tensor_get_type``, no importance matrix).

    Followed: the output matrix (or the token embeddings when they are tied) gets Q6_K (Q8_0 when its rows do not
    split into blocks); the *_M mixes give ``attn_v`` and ``ffn_down`` Q6_K on the layers ``use_more_bits`` picks;
    Q4_K_S gives them Q5_K on the first eighth of the layers; 80-layer (70B-class) llama models get Q5_K ``attn_v``
    instead of Q4_K; rows that do not split into a k-quant's 256-element blocks fall back to a legacy type.
    Left out (approximations): the rules for MoE experts, Falcon and the 1-3 bit mixes.
    """
    ftype_name = quantization.upper()
    if ftype_name not in QUANTIZATIONS:
        raise CardError(
            f"quantization {quantization!r} is not known to the card estimator",
            hint=f"use one of {', '.join(QUANTIZATIONS)}",
        )
    _, base = QUANTIZATIONS[ftype_name]
    if base in (F32, F16, BF16):
        return base
    out = base
    is_output = name == "output.weight" or (shape.tied_embeddings and name == "token_embd.weight")
    if is_output:
        if ne0 % _block_size(base) != 0:
            out = Q8_0
        elif base != Q8_0:
            out = Q6_K
    elif name.endswith(".attn_v.weight"):
        if ftype_name in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, shape.n_layer):
            out = Q6_K
        elif ftype_name == "Q4_K_S" and layer < 4:
            out = Q5_K
        if shape.n_layer == 80 and out in (Q3_K, Q4_K):
            out = Q5_K
    elif name.endswith(".ffn_down.weight"):
        if ftype_name in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, shape.n_layer):
            out = Q6_K
        elif ftype_name == "Q4_K_S" and layer < shape.n_layer // 8:
            out = Q5_K
    if out in _FALLBACK and ne0 % _block_size(out) != 0:
        out = _FALLBACK[out]
    return out


def _tensor_shapes(shape: cards.Shape, architecture: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, ggml dims with the row length first, layer) of every tensor, in llama.cpp's naming."""
    hd = shape.head_dim or shape.n_embd // shape.n_head
    q, kv, e = shape.n_head * hd, shape.n_head_kv * hd, shape.n_embd
    out: list[tuple[str, tuple[int, ...], int]] = [("token_embd.weight", (e, shape.n_vocab), -1)]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,), i),
            (b + "attn_q.weight", (e, q), i),
            (b + "attn_k.weight", (e, kv), i),
            (b + "attn_v.weight", (e, kv), i),
            (b + "attn_output.weight", (q, e), i),
            (b + "ffn_norm.weight", (e,), i),
            (b + "ffn_gate.weight", (e, shape.n_ff), i),
            (b + "ffn_up.weight", (e, shape.n_ff), i),
            (b + "ffn_down.weight", (shape.n_ff, e), i),
        ]
        if shape.attention_bias:
            out += [(b + "attn_q.bias", (q,), i), (b + "attn_k.bias", (kv,), i), (b + "attn_v.bias", (kv,), i)]
        if architecture.startswith("gemma"):
            out += [
                (b + "attn_q_norm.weight", (hd,), i),
                (b + "attn_k_norm.weight", (hd,), i),
                (b + "post_attention_norm.weight", (e,), i),
                (b + "post_ffw_norm.weight", (e,), i),
            ]
    out.append(("output_norm.weight", (e,), shape.n_layer))
    if not shape.tied_embeddings:
        out.append(("output.weight", (e, shape.n_vocab), shape.n_layer))
    return out


def synthetic_header(shape: cards.Shape, quantization: str, *, architecture: str) -> GGUFHeader:
    """The GGUF header a file of this shape and quantisation would have: metadata, tensor infos, offsets."""
    ftype, _ = QUANTIZATIONS.get(quantization.upper(), (None, None))
    tensors: list[TensorInfo] = []
    offset = 0
    for name, dims, layer in _tensor_shapes(shape, architecture):
        ggml_type = (
            tensor_type(name, dims[0], quantization=quantization, layer=layer, shape=shape) if len(dims) > 1 else F32
        )
        rows = 1
        for d in dims[1:]:
            rows *= d
        n_bytes = row_bytes(ggml_type, dims[0]) * rows
        tensors.append(TensorInfo(name=name, shape=dims, ggml_type=ggml_type, offset=offset, n_bytes=n_bytes))
        offset += -(-n_bytes // ALIGNMENT) * ALIGNMENT
    a = architecture
    metadata: dict[str, Any] = {
        "general.architecture": a,
        "general.file_type": ftype,
        f"{a}.block_count": shape.n_layer,
        f"{a}.context_length": shape.context_length,
        f"{a}.embedding_length": shape.n_embd,
        f"{a}.feed_forward_length": shape.n_ff,
        f"{a}.attention.head_count": shape.n_head,
        f"{a}.attention.head_count_kv": shape.n_head_kv,
        f"{a}.vocab_size": shape.n_vocab,
    }
    if shape.head_dim:
        metadata[f"{a}.attention.key_length"] = shape.head_dim
        metadata[f"{a}.attention.value_length"] = shape.head_dim
    if shape.sliding_window:
        metadata[f"{a}.attention.sliding_window"] = shape.sliding_window
    header_bytes = -(-(shape.n_vocab * HEADER_BYTES_PER_TOKEN + len(tensors) * 64) // ALIGNMENT) * ALIGNMENT
    return GGUFHeader(
        version=3,
        metadata=metadata,
        array_lengths={"tokenizer.ggml.tokens": shape.n_vocab},
        tensors=tuple(tensors),
        alignment=ALIGNMENT,
        data_offset=header_bytes,
        header_bytes=header_bytes,
        file_size=header_bytes + offset,
    )


def variant_header(card: cards.Card, variant: cards.Variant) -> GGUFHeader:
    return synthetic_header(card.shape[variant.parameters], variant.quantization, architecture=card.architecture)


def computed(card: cards.Card, variant: cards.Variant) -> dict[str, int]:
    """``size`` (approximate GGUF file bytes) and ``vram`` (GPU bytes with every layer offloaded, at ``modelctl
    run``'s default settings: a context of min(trained, 4096) tokens, f16 cache, batch 512) of a variant."""
    header = variant_header(card, variant)
    est = estimate(header, RunSettings(), gpu_layers=-1, gpu_split=(), buffers=WeightBuffers(setting="none"))
    return {"size": int(header.file_size or 0), "vram": est.gpus[0].total if est.gpus else est.total}


def update_text(text: str, *, source: str = "card") -> str:
    """The card's text with every variant's ``size`` and ``vram`` recomputed."""
    card = cards.parse(text, source=source)
    return cards.with_values(text, {v.tag: computed(card, v) for v in card.variants}, source=source)


def variants_for(text: str) -> tuple[VariantInfo, ...]:
    """The other variants of ``text``'s repository from its bundled card (for ``fit``'s suggestion); () when
    there is no card (a broken bundled card is no reason to fail a fit check)."""
    try:
        ref = reference.parse(text)
        card = cards.bundled_card(ref.repository)
    except (ModelctlError, OSError):
        return ()
    if card is None:
        return ()
    this = card.variant(ref.tag) if not ref.digest else None
    out = []
    for v in card.variants:
        if this is not None and v.tag == this.tag:
            continue
        size = v.size if v.size is not None else _size_or_none(card, v)
        if size:
            out.append(VariantInfo(reference=ref.with_tag(v.tag).short, weights=size, quantization=v.quantization))
    return tuple(out)


def _size_or_none(card: cards.Card, variant: cards.Variant) -> int | None:
    try:
        return computed(card, variant)["size"]
    except CardError:
        return None


def card_variants(name: str) -> Callable[[], Sequence[VariantInfo]]:
    """The variants in ``name``'s bundled card, read only if the fit check needs a suggestion."""

    def find() -> Sequence[VariantInfo]:
        return variants_for(name)

    return find
