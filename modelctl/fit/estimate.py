"""What llama.cpp allocates for a model and settings, per device (FACTS.md section 5), predicted from the header.

The buffers are the ones llama.cpp prints when it loads a model verbosely, computed by its rules (the version in
llama-cpp-python 0.3.36):

- **weights**: the input layer (``token_embd``) stays on the CPU; layer ``n_layer`` is the output layer; with
  ``--gpu-layers N`` the last N layers counting the output layer are offloaded (``i_gpu_start = max(n_layer + 1 -
  N, 0)``), split over GPUs by their free memory; a tied output copies ``token_embd`` to the output layer's device.
  On the CPU the weights are mmapped: the buffer spans the file range its tensors occupy. Matrices that the load's
  extra buffers take (:class:`modelctl.cpu.WeightBuffers`: ``AMX`` first where used, then ``CPU_REPACK`` for Q4_0 /
  Q4_K / IQ4_NL on AVX2, more on ARM) get a second, allocated copy instead, of llama.cpp's size for that buffer.
- **kv_cache**: per layer ``row(K, n_head_kv * k_len) + row(V, n_head_kv * v_len)`` bytes per cell on the layer's
  device, cells = n_ctx padded to 256; without flash attention the V rows are padded to the widest layer's; MLA
  keeps K only; sliding-window layers keep ``pad256(min(n_ctx, n_swa * n_seq + n_ubatch))`` cells unless
  ``swa_full`` (llama-cpp-python's default: full size); recurrent layers keep f32 states per sequence.
- **output**: logits of one token per sequence, ``n_vocab * n_seq * 4`` bytes of host memory.
- **compute**: reserved for a batch of ``n_ubatch`` tokens with every one an output: the larger of the logits step
  and the attention step (see :func:`compute_buffer`), calibrated on llama.cpp's own numbers.
- **host_extra**: host memory no llama.cpp buffer reports: llama-cpp-python's numpy ``scores`` (``n_batch x
  n_vocab`` float32), its token and candidate arrays, and the resident part of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from modelctl import cpu as _cpu
from modelctl.cpu import WeightBuffers
from modelctl.fit.settings import CACHE_TYPES, RunSettings
from modelctl.fit.shapes import ModelShape, shape_of, tensor_layer
from modelctl.gguf import GGUFHeader, TensorInfo, merge, row_bytes, type_sizes

KV_PAD = 256
CPU_ALIGN = 32
GPU_ALIGN = 128
CUDA_ROW_PADDING = 512
F16, F32 = 1, 0

FRAGMENT_ROWS = 1 << 20
"""Without flash attention, batch activations (``n_embd x n_ubatch`` float32) this large fragment the allocator."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Buffers:
    """Bytes one device holds, by buffer."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    output: int = 0
    host_extra: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output + self.host_extra


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """The prediction for one load: the CPU side (host RAM) and each GPU."""

    n_ctx: int
    """The context asked for."""
    n_ctx_padded: int
    """What llama.cpp allocates (a multiple of 256)."""
    n_layer: int
    gpu_layers: int
    """Layers offloaded, counting the output layer (0..n_layer + 1)."""
    cpu: Buffers
    gpus: tuple[Buffers, ...] = field(default_factory=tuple)

    def _sum(self, name: str) -> int:
        return int(getattr(self.cpu, name)) + sum(int(getattr(g, name)) for g in self.gpus)

    @property
    def weights(self) -> int:
        return self._sum("weights")

    @property
    def kv_cache(self) -> int:
        return self._sum("kv_cache")

    @property
    def compute(self) -> int:
        return self._sum("compute")

    @property
    def output(self) -> int:
        return self._sum("output")

    @property
    def host_extra(self) -> int:
        return self._sum("host_extra")

    @property
    def total(self) -> int:
        return self.cpu.total + sum(g.total for g in self.gpus)


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def estimate(
    model: GGUFHeader | Sequence[GGUFHeader],
    settings: RunSettings,
    *,
    n_ctx: int | None = None,
    gpu_layers: int = 0,
    gpu_split: Sequence[float] = (),
    buffers: WeightBuffers | None = None,
) -> Estimate:
    """Predict llama.cpp's buffers.

    ``gpu_layers`` layers (the output layer counts as one) go to the GPUs, split in proportion to ``gpu_split``
    (their free memory; one GPU when empty). ``buffers`` are the extra CPU weight buffers the load uses (``None``:
    ``settings.cpu_buffers`` on this machine's CPU).
    """
    header = merge([model] if isinstance(model, GGUFHeader) else model)
    shape = shape_of(header)
    if buffers is None:
        buffers = _cpu.weight_buffers(settings.cpu_buffers, _cpu.features())
    ctx = n_ctx or settings.resolved_ctx(shape.n_ctx_train)
    if gpu_layers < 0:  # llama.cpp's -1: all of them
        gpu_layers = shape.n_layer + 1
    n_gpus = max(len(gpu_split), 1) if gpu_layers > 0 else 0
    gpu_layers = min(gpu_layers, shape.n_layer + 1)
    device_of = _layer_devices(shape.n_layer, gpu_layers, gpu_split)

    weights = _weights(header, shape, device_of, n_gpus, buffers)
    kv, cells = _kv_cache(shape, settings, ctx, device_of, n_gpus)
    compute = compute_buffer(shape, settings, ctx, device_of, n_gpus)
    output = shape.n_vocab * settings.n_seq * 4
    extra = host_extra(shape, settings, ctx)
    cpu = Buffers(weights=weights[0], kv_cache=kv[0], compute=compute[0], output=output, host_extra=extra)
    gpus = tuple(
        Buffers(weights=weights[i + 1], kv_cache=kv[i + 1], compute=compute[i + 1]) for i in range(n_gpus)
    )
    return Estimate(n_ctx=ctx, n_ctx_padded=cells, n_layer=shape.n_layer, gpu_layers=gpu_layers, cpu=cpu, gpus=gpus)


def _layer_devices(n_layer: int, gpu_layers: int, split: Sequence[float]) -> list[int]:
    """Device per layer 0..n_layer (the last is the output layer): 0 is the CPU, 1.. the GPUs."""
    start = max(n_layer + 1 - gpu_layers, 0)
    shares = [max(s, 0.0) for s in split] or [1.0]
    if not sum(shares):
        shares = [1.0] * len(shares)
    total = sum(shares)
    bounds, acc = [], 0.0
    for share in shares:  # cumulative, as llama.cpp's split points
        acc += share / total
        bounds.append(acc)
    devices = []
    for il in range(n_layer + 1):
        if gpu_layers == 0 or il < start:
            devices.append(0)
            continue
        frac = (il - start) / gpu_layers
        gpu = next((i for i, b in enumerate(bounds) if frac < b), len(bounds) - 1)
        devices.append(gpu + 1)
    return devices


def _gpu_bytes(t: TensorInfo) -> int:
    size = t.n_bytes
    block, _ = type_sizes(t.ggml_type)
    if block > 1 and t.shape[0] % CUDA_ROW_PADDING:
        size += row_bytes(t.ggml_type, CUDA_ROW_PADDING - t.shape[0] % CUDA_ROW_PADDING)
    return _align(size, GPU_ALIGN)


def _weights(
    header: GGUFHeader, shape: ModelShape, device_of: list[int], n_gpus: int, buffers: WeightBuffers
) -> list[int]:
    out = [0] * (n_gpus + 1)
    spans: dict[int, tuple[int, int]] = {}  # file -> (first, last) of the mmapped CPU tensors
    placed: list[tuple[TensorInfo, int]] = []
    for t in header.tensors:
        layer = tensor_layer(t, shape.n_layer)
        placed.append((t, 0 if layer < 0 else device_of[layer]))
    embd = header.tensor("token_embd.weight")
    if shape.tied_embeddings and embd is not None:
        placed.append((embd, device_of[shape.n_layer]))  # the output layer's copy (same bytes on the CPU)
        tied_output = len(placed) - 1
    else:
        tied_output = -1
    for i, (t, dev) in enumerate(placed):
        if dev:
            out[dev] += _gpu_bytes(t)
            continue
        copy = _cpu_copy(t, buffers, tied=i == tied_output)
        if copy:
            out[0] += copy
            continue
        first, last = spans.get(t.file, (1 << 62, 0))
        spans[t.file] = (min(first, t.offset), max(last, t.offset + t.n_bytes))
    out[0] += sum(last - first for first, last in spans.values() if last > first)
    return out


def _cpu_copy(t: TensorInfo, buffers: WeightBuffers, *, tied: bool) -> int:
    """Bytes of the extra-buffer copy a CPU weight gets (0: it stays in the mmapped file).

    llama.cpp tries the extra buffer types in order (AMX, then CPU_REPACK) for matrices used in products; the tied
    output's copy of ``token_embd`` is one, but tensor overrides match names, so ``auto`` on an AMX CPU (which
    places CPU_REPACK by override) leaves it in the file.
    """
    mul_mat = tied or _cpu.uses_mul_mat(t.name, t.shape)
    if not mul_mat:
        return 0
    if buffers.amx and _cpu.amx_eligible(t.ggml_type, t.shape):
        return _align(_cpu.amx_bytes(t.ggml_type, t.shape), CPU_ALIGN)
    if tied and buffers.repack_by_override:
        return 0
    if _cpu.repackable(t.ggml_type, t.shape, buffers.repack):
        return _align(t.n_bytes, CPU_ALIGN)
    return 0


def kv_cells(shape: ModelShape, settings: RunSettings, n_ctx: int) -> tuple[int, int]:
    """(cells of a full-attention layer, cells of a sliding-window layer)."""
    cells = _align(n_ctx, KV_PAD)
    if settings.n_seq > 1:
        cells = _align(cells // settings.n_seq, KV_PAD) * settings.n_seq
    swa = cells
    if shape.swa_any and not settings.swa_full:
        n_batch = min(n_ctx, settings.n_batch)
        n_ubatch = min(n_batch, settings.n_ubatch)
        swa = _align(min(cells, shape.n_swa + n_ubatch), KV_PAD)
    return cells, swa


def _kv_cache(
    shape: ModelShape, settings: RunSettings, n_ctx: int, device_of: list[int], n_gpus: int
) -> tuple[list[int], int]:
    out = [0] * (n_gpus + 1)
    cells, swa_cells = kv_cells(shape, settings, n_ctx)
    ctype = CACHE_TYPES[settings.cache_type]
    v_trans = not settings.flash_attention
    attn = [layer for layer in shape.layers if layer.has_kv]
    v_max = max((layer.n_head_kv * layer.v_len for layer in attn), default=0)
    for il, layer in enumerate(shape.layers):
        dev = device_of[il]
        if layer.recurrent:
            out[dev] += (shape.recurrent_r + shape.recurrent_s) * 4 * max(settings.n_seq, 1)
            continue
        if not layer.has_kv:
            continue
        n = swa_cells if layer.swa else cells
        size = row_bytes(ctype, layer.n_head_kv * layer.k_len) * n
        if not shape.mla:
            width = v_max if v_trans else layer.n_head_kv * layer.v_len
            size += row_bytes(ctype, width) * n
        out[dev] += size
    return out, cells


def compute_buffer(
    shape: ModelShape, settings: RunSettings, n_ctx: int, device_of: Sequence[int] = (), n_gpus: int = 0
) -> list[int]:
    """The compute buffer per device (CPU first), reserved for the worst-case batch.

    llama.cpp reserves a graph of ``T = min(n_ubatch, n_batch, n_ctx)`` tokens, every one an output, against the
    full cache of ``K`` cells; the buffer is the high-water mark of ggml's graph allocator. That mark is one of two
    steps plus what is alive around it (``E``, ``F``: embedding and widest feed-forward width; ``masks``: one
    ``K x T`` mask per attention kind, float32, or f16 with flash attention)::

        without flash attention: max(V*T*4 + 3*E*T*4,                      the logits (5*E*T*4 if soft-capped)
                                     max_l(K*T*H_l*4) + masks + min(2*F, 8*E)*T*4 + 3*E*T*4,  the scores
                                     masks + 3*F*T*4 + 3*E*T*4 + KV*T*4)    the feed-forward step
        with flash attention:    max(V*T*4 + 5*E*T*4 (+ masks when small), masks + 3*F*T*4 + 3*E*T*4)

    plus 256 KiB of small inputs (``KV``: the widest layer's K plus V row). Models whose layers differ in size
    fragment the allocator more: their logits step also counts the masks. ggml's allocator frees a tensor after
    its last use and reuses the block (best fit among the free blocks, else the end of the buffer), and element-wise
    ops (norm scales, residual adds, the in-place softmax) take over their parent's block; matrix products and the
    SwiGLU do not. So the feed-forward step holds gate, up and their product (three ``F x T`` blocks) at once;
    they land in the hole the previous layer's attention scores left, and once ``F`` outgrows it (feed-forward
    length over about 4x the embedding width) they stand on the masks and the batch rows instead: the scores step
    no longer carries the feed-forward blocks below it (hence ``min(2*F, 8*E)``) and the feed-forward step
    decides. The activation coefficients were fitted to llama.cpp's own reports (CPU
    backend, benchmarks/fit_accuracy.py) so that the prediction is not below them; a GPU backend runs the same
    graph, so its buffer uses the same formula for the layers it holds, and the device with the output layer
    takes the logits step.
    """
    cells, swa_cells = kv_cells(shape, settings, n_ctx)
    n_batch = min(n_ctx, settings.n_batch)
    t = min(settings.n_ubatch, n_batch, cells)
    fa = settings.flash_attention
    e_t = shape.n_embd * t * 4
    ff = shape.n_ff_max or 4 * shape.n_embd
    if shape.n_expert and shape.n_expert_used:
        ff = max(ff, (shape.n_ff_exp or ff) * shape.n_expert_used + shape.n_expert)
    f_t = ff * t * 4
    small = 256 << 10  # positions, output ids, norms of a few rows
    masks = (1 + (1 if shape.swa_any else 0)) * cells * t * (2 if fa else 4)
    logits = shape.n_vocab * t * 4
    variable = len({(layer.n_head, layer.n_head_kv, layer.n_ff) for layer in shape.layers}) > 1
    ffn_step = 0
    if fa:
        tail = 5 if shape.softcap_logits or variable else 3
        out_step = logits + tail * e_t + (masks if variable or masks * 16 < logits else 0)
        attention = masks + 3 * f_t + 3 * e_t
    else:
        out_step = logits + (5 if shape.softcap_logits else 3) * e_t + (masks + 2 * e_t if variable else 0)
        if e_t >= FRAGMENT_ROWS:
            # batch rows of 1 MiB and more no longer fit the holes the layers leave: the logits land higher
            out_step += 3 * e_t
        attn_layers = [(layer, swa_cells if layer.swa else cells) for layer in shape.layers if layer.has_kv]
        scores = max((n * t * layer.n_head * 4 for layer, n in attn_layers), default=0)
        kv_t = max((layer.n_head_kv * (layer.k_len + layer.v_len) * t * 4 for layer, _ in attn_layers), default=0)
        # the previous layer's feed-forward blocks below the scores, as far as the holes reach (see above)
        attention = scores + masks + min(2 * f_t, 8 * e_t) + 3 * e_t
        ffn_step = masks + 3 * f_t + 3 * e_t + kv_t
    out_step += small
    attention += small
    recurrent = 0
    if any(layer.recurrent for layer in shape.layers):
        recurrent = (shape.recurrent_r + shape.recurrent_s) * 4 * max(settings.n_seq, 1) * 3 + 4 * f_t
    peak_layers = max(attention, recurrent, 3 * f_t + 6 * e_t, ffn_step + small)
    if not n_gpus or not device_of:
        return [max(out_step, peak_layers)]
    out = [0] * (n_gpus + 1)
    output_dev = device_of[-1]
    for dev in set(device_of[:-1]):
        out[dev] = max(out[dev], peak_layers)
    out[output_dev] = max(out[output_dev], out_step)
    if out[0] == 0:
        # the host keeps the inputs (embeddings of the batch, positions, masks) for the GPUs
        out[0] = e_t + masks
    return out


def host_extra(shape: ModelShape, settings: RunSettings, n_ctx: int) -> int:
    """Host memory llama-cpp-python holds besides llama.cpp's buffers."""
    scores = settings.n_batch * shape.n_vocab * 4
    tokens = n_ctx * 4
    candidates = shape.n_vocab * 12
    batch = settings.n_batch * min(n_ctx * 4 + 16, 4096)  # seq_id rows of n_ctx ints: the touched pages
    return scores + tokens + candidates + batch
