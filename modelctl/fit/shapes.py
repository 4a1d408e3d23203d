"""A model's shape as llama.cpp derives it from the GGUF header: per-layer heads, head sizes, sliding-window and
recurrent layers, the vocabulary, and which tensors belong to which layer; also the quantisation and parameter
count. :class:`~modelctl.gguf.GGUFHeader` says what the file says; what it means is derived here, once.

These are the rules of llama.cpp's ``llama_model::load_hparams`` that decide memory (the version inside
llama-cpp-python 0.3.36): ``head_count``/``head_count_kv``/``feed_forward_length`` may be per-layer arrays,
key/value lengths default to ``n_embd / n_head``, sliding-window layers follow a per-architecture pattern (or the
``sliding_window_pattern`` key), MLA models keep only a K cache, recurrent layers keep a fixed-size state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelctl.errors import GGUFError
from modelctl.gguf import GGUFHeader, TensorInfo, file_type_name, ggml_type_name

MAX_LAYERS = 4096
"""llama.cpp allows 512 layers; a header claiming more than this is not a model."""

# architecture -> (layers per pattern period, dense layer first); SWA layers are the others in each period
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "gemma-embedding": (6, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "exaone4": (4, False),
    "exaone-moe": (4, False),
    "afmoe": (4, False),
    "llama4": (4, False),
    "olmo2": (4, False),
    "openai-moe": (2, False),
    "gpt-oss": (2, False),
    "smallthinker": (4, True),
    "plamo3": (8, False),
    "mellum": (4, False),
    "laguna": (4, True),
}
SWA_DEFAULT_WINDOW = {"gemma2": 4096}
RECURRENT = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
HYBRID = frozenset(
    {"jamba", "falcon-h1", "granitehybrid", "nemotron_h", "nemotron_h_moe", "lfm2", "lfm2moe", "plamo2"}
)
SOFTCAP_LOGITS = frozenset({"gemma2", "gemma3", "gemma3n", "grok"})
"""Architectures whose graph caps the final logits (one more logits-sized step in the compute graph)."""

_BLOCK = re.compile(r"^blk\.(\d+)\.")
INPUT_TENSORS = ("token_embd.", "token_types.", "position_embd.", "per_layer_token_embd.", "tok_norm.")


@dataclass(frozen=True, kw_only=True, slots=True)
class Layer:
    n_head: int
    n_head_kv: int
    k_len: int
    v_len: int
    n_ff: int
    swa: bool = False
    recurrent: bool = False

    @property
    def has_kv(self) -> bool:
        return not self.recurrent and self.n_head_kv > 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelShape:
    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int | None
    layers: tuple[Layer, ...]
    n_swa: int = 0
    mla: bool = False
    """Multi-head latent attention: the cache holds K only (``k_len`` wide: kv_lora_rank + rope dims)."""
    kv_lora_rank: int = 0
    """MLA's latent width (the cached K less its rope part): the width each head's query is absorbed into."""
    n_rot: int = 0
    """MLA's rope part of each head (``rope.dimension_count``)."""
    mla_k_len: int = 0
    """MLA's per-head query length before absorption (``key_length_mla``: no-rope + rope parts)."""
    n_layer_dense_lead: int = 0
    """MoE models: the first layers whose feed-forward is dense (``leading_dense_block_count``)."""
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    recurrent_r: int = 0
    """Floats of rolling (conv / token-shift) state per recurrent layer and sequence."""
    recurrent_s: int = 0
    """Floats of SSM / WKV state per recurrent layer and sequence."""
    softcap_logits: bool = False
    tied_embeddings: bool = False
    """No ``output.weight``: the output layer reuses ``token_embd`` (a copy when it is offloaded)."""

    @property
    def swa_any(self) -> bool:
        return any(layer.swa for layer in self.layers)

    @property
    def n_head_max(self) -> int:
        return max((layer.n_head for layer in self.layers), default=0)

    @property
    def n_ff_max(self) -> int:
        return max((layer.n_ff for layer in self.layers), default=0)


def tensor_layer(tensor: TensorInfo, n_layer: int) -> int:
    """The layer a tensor is placed with: ``-1`` for the input layer (CPU), ``n_layer`` for the output layer."""
    m = _BLOCK.match(tensor.name)
    if m:
        return min(int(m.group(1)), n_layer)
    if tensor.name.startswith(INPUT_TENSORS):
        return -1
    return n_layer


def shape_of(header: GGUFHeader) -> ModelShape:
    """Derive the shape; a header without the keys every model has raises GGUFError."""
    arch = header.architecture
    if not arch:
        raise GGUFError("GGUF header has no general.architecture", hint="is this a model file?")
    n_layer = header.arch_int("block_count")
    n_embd = header.arch_int("embedding_length")
    if n_layer <= 0 or n_layer > MAX_LAYERS or n_embd <= 0:
        raise GGUFError(f"GGUF header of a {arch} model lacks block_count or embedding_length")
    heads = _per_layer(header, "attention.head_count", n_layer)
    # absent: as many KV heads as query heads; 0 marks a layer without attention
    has_kv = header.arch("attention.head_count_kv") is not None
    kv_heads = _per_layer(header, "attention.head_count_kv", n_layer) if has_kv else heads
    ffs = _per_layer(header, "feed_forward_length", n_layer)
    n_head0 = heads[0]
    k_full = header.arch_int("attention.key_length", n_embd // n_head0 if n_head0 else 0)
    v_full = header.arch_int("attention.value_length", n_embd // n_head0 if n_head0 else 0)
    k_swa = header.arch_int("attention.key_length_swa", k_full)
    v_swa = header.arch_int("attention.value_length_swa", v_full)

    if min(heads + kv_heads + ffs + [k_full, v_full, k_swa, v_swa]) < 0:
        raise GGUFError(f"GGUF header of a {arch} model has a negative head count or length")
    swa = _swa_layers(header, arch, n_layer)
    n_swa = header.arch_int("attention.sliding_window") or (SWA_DEFAULT_WINDOW.get(arch, 0) if any(swa) else 0)
    if not n_swa:
        swa = [False] * n_layer
    recurrent = [arch in RECURRENT or (arch in HYBRID and kv_heads[i] == 0) for i in range(n_layer)]

    layers = tuple(
        Layer(
            n_head=heads[i],
            n_head_kv=kv_heads[i],
            k_len=k_swa if swa[i] else k_full,
            v_len=v_swa if swa[i] else v_full,
            n_ff=ffs[i],
            swa=swa[i],
            recurrent=recurrent[i],
        )
        for i in range(n_layer)
    )
    mla = header.arch_int("attention.key_length_mla") > 0 and header.arch_int("attention.value_length_mla") > 0
    # the roped part of a head: MLA's query, and the per-head DeepSeek graph's K, whose rope part is repeated per head
    n_rot = header.arch_int("rope.dimension_count") if mla or arch == "deepseek2" else 0
    # the tokenizer's token list (counted even when skipped), else the vocab_size key
    n_vocab = header.array_lengths.get("tokenizer.ggml.tokens") or header.arch_int("vocab_size")
    if n_vocab <= 0:
        raise GGUFError(f"GGUF header of a {arch} model has no vocabulary (tokenizer.ggml.tokens)")
    return ModelShape(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_ctx_train=header.arch_int("context_length") or None,
        layers=layers,
        n_swa=n_swa,
        mla=mla,
        kv_lora_rank=header.arch_int("attention.kv_lora_rank", k_full - n_rot) if mla else 0,
        n_rot=n_rot,
        mla_k_len=header.arch_int("attention.key_length_mla") if mla else 0,
        n_layer_dense_lead=header.arch_int("leading_dense_block_count"),
        n_expert=header.arch_int("expert_count"),
        n_expert_used=header.arch_int("expert_used_count"),
        n_ff_exp=header.arch_int("expert_feed_forward_length"),
        recurrent_r=_recurrent_r(header, n_embd) if any(recurrent) else 0,
        recurrent_s=_recurrent_s(header, n_embd) if any(recurrent) else 0,
        softcap_logits=arch in SOFTCAP_LOGITS and _softcap(header),
        # llama.cpp's rule: with no output.weight the output layer is token_embd, duplicated
        tied_embeddings=header.tensor("output.weight") is None,
    )


def _per_layer(header: GGUFHeader, key: str, n_layer: int) -> list[int]:
    """A hyper-parameter that is a scalar or a per-layer array, as one value per layer (llama.cpp's rule)."""
    value = header.arch(key)
    if isinstance(value, list):
        if len(value) != n_layer or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise GGUFError(f"{header.architecture}.{key} has {len(value)} items for {n_layer} layers")
        return [int(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n_layer
    return [0] * n_layer


def quantization(header: GGUFHeader) -> str | None:
    """The file type as llama.cpp names it (``Q4_K_M``), else the most common weight type."""
    file_type = header.get("general.file_type")
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        name = file_type_name(file_type)
        if name:
            return name
    sizes: dict[int, int] = {}
    for t in header.tensors:
        if len(t.shape) >= 2:
            sizes[t.ggml_type] = sizes.get(t.ggml_type, 0) + t.n_bytes
    return ggml_type_name(max(sizes, key=lambda k: sizes[k])) if sizes else None


def parameter_count(header: GGUFHeader) -> int:
    return sum(t.n_elements for t in header.tensors)


def _swa_layers(header: GGUFHeader, arch: str, n_layer: int) -> list[bool]:
    explicit = header.arch("attention.sliding_window_pattern")
    if isinstance(explicit, list):
        if len(explicit) != n_layer:
            raise GGUFError(f"{arch}.attention.sliding_window_pattern has {len(explicit)} items for {n_layer} layers")
        return [bool(v) for v in explicit]
    if arch not in SWA_PATTERNS:
        return [False] * n_layer
    period, dense_first = SWA_PATTERNS[arch]
    if isinstance(explicit, int) and not isinstance(explicit, bool):
        period = explicit
    if period <= 0:
        return [True] * n_layer
    if dense_first:
        return [i % period != 0 for i in range(n_layer)]
    return [i % period < period - 1 for i in range(n_layer)]


def _softcap(header: GGUFHeader) -> bool:
    value = header.arch("final_logit_softcapping")
    if header.architecture == "gemma2":
        return value is None or bool(value)
    return bool(value)


def _recurrent_r(header: GGUFHeader, n_embd: int) -> int:
    head_size = header.arch_int("wkv.head_size")
    if head_size:
        return header.arch_int("token_shift_count", 2) * n_embd
    conv = header.arch_int("shortconv.l_cache")
    if conv:
        return n_embd * (conv - 1)
    d_conv = header.arch_int("ssm.conv_kernel")
    d_inner = header.arch_int("ssm.inner_size")
    d_state = header.arch_int("ssm.state_size")
    n_group = header.arch_int("ssm.group_count")
    return max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)


def _recurrent_s(header: GGUFHeader, n_embd: int) -> int:
    head_size = header.arch_int("wkv.head_size")
    if head_size:
        return n_embd * head_size
    return header.arch_int("ssm.state_size") * header.arch_int("ssm.inner_size")
