"""What llama.cpp allocates for a model and settings, per device (FACTS.md section 5), predicted from the header.

The buffers are the ones llama.cpp prints when it loads a model verbosely, computed by its rules (the version in
llama-cpp-python 0.3.36):

- **weights**: the input layer (``token_embd``) stays on the CPU; layer ``n_layer`` is the output layer; with
  ``--gpu-layers N`` the last N layers counting the output layer are offloaded (``i_gpu_start = max(n_layer + 1 -
  N, 0)``), split over GPUs by their free memory or ``--tensor-split`` (``split_mode`` ``none``: the first GPU
  only; ``row``: each offloaded layer's matrices are cut by rows over the GPUs, the rest stays with the layer);
  a tied output copies ``token_embd`` to the output layer's device; ``--n-cpu-moe N`` keeps the expert tensors
  (``ffn_*_exps``) of the first N layers on the host, as ``--override-tensor PATTERN=CPU`` keeps any tensor whose
  name matches (``host_tensors``: replaying a logged load; every such override turns pipeline parallelism off).
  On the CPU the weights are mmapped: the buffer spans the file
  range its tensors occupy. Matrices that the load's extra buffers take (:class:`modelctl.cpu.WeightBuffers`:
  ``AMX`` first where used, then ``CPU_REPACK`` for Q4_0 / Q4_K / IQ4_NL on AVX2, more on ARM) get a second,
  allocated copy instead, of llama.cpp's size for that buffer; with a GPU backend llama.cpp offers the GPU's pinned
  host buffer type first, which mmap turns back into the plain mapped file, so there are no such copies.
  On a GPU each tensor is allocated: CUDA and ROCm pad a quantised matrix's rows to 512 elements and align each
  tensor to 128 bytes; Vulkan aligns only; Metal maps the file range of its tensors, as the CPU does.
- **kv_cache**: per layer ``row(K, n_head_kv * k_len) + row(V, n_head_kv * v_len)`` bytes per cell on the layer's
  device, cells = n_ctx padded to 256; without flash attention the V rows are padded to the widest layer's; MLA
  keeps K only; sliding-window layers keep ``pad256(min(n_ctx, n_swa * n_seq + n_ubatch))`` cells unless
  ``swa_full`` (llama-cpp-python's default: full size); recurrent layers keep f32 states per sequence.
- **output**: logits of one token per sequence, ``n_vocab * n_seq * 4`` bytes of host memory.
- **compute**: reserved for a batch of ``n_ubatch`` tokens with every one an output: the larger of the logits step
  and the attention step (see :func:`compute_buffer`), calibrated on llama.cpp's own numbers. Each GPU reserves it
  for the layers it holds (the output layer's device also the logits step), the host (pinned ``CUDA_Host`` and
  friends) for the layers it keeps, or only the inputs it hands the GPUs; with several GPUs holding every layer
  llama.cpp pipelines the batch (``n_copies = 4``, :data:`PIPELINE_COPIES`) and keeps a copy of each GPU's inputs
  per stage.
- **host_extra**: host memory no llama.cpp buffer reports: llama-cpp-python's numpy ``scores`` (``n_batch x
  n_vocab`` float32), its token and candidate arrays, and the resident part of its batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from modelctl import cpu as _cpu
from modelctl.cpu import WeightBuffers
from modelctl.fit.builds import BUNDLED, LlamaBuild
from modelctl.fit.settings import CACHE_TYPES, RunSettings
from modelctl.fit.shapes import Layer, ModelShape, shape_of, tensor_layer
from modelctl.gguf import GGUFHeader, TensorInfo, merge, row_bytes, type_sizes

CPU_ALIGN = 32
GPU_ALIGN = 128
CUDA_ROW_PADDING = 512
F16, F32 = 1, 0

BACKENDS = ("cuda", "rocm", "vulkan", "metal")
"""GPU backends llama.cpp offers (its device names: ``CUDA0``, ``ROCm0``, ``Vulkan0``, ``MTL0``)."""
ROW_PADDED = frozenset({"cuda", "rocm"})
"""Backends that pad a quantised matrix's rows to ``CUDA_ROW_PADDING`` elements (ggml-cuda's ``get_alloc_size``)."""
MAPPED = frozenset({"metal"})
"""Backends that map the model file instead of copying it (``buffer_from_host_ptr``: ``Metal_Mapped``)."""
PIPELINE_COPIES = 4
"""``GGML_SCHED_MAX_COPIES``: the copies of each split's inputs when llama.cpp pipelines over several GPUs."""
OFFLOAD_BACKENDS = frozenset({"cuda", "rocm", "vulkan"})
"""Backends that run a large batch's products on the GPU even where the weights are in host memory (their
``offload_op``): the scheduler copies such a weight into the first GPU's compute buffer, one at a time."""
OFFLOAD_MIN_BATCH = 32
"""Their threshold: batches of this many tokens or more are offloaded (``GGML_OP_OFFLOAD_MIN_BATCH``)."""
FLASH_HEAD_SIZES = frozenset({64, 80, 96, 112, 128, 256, 576})
"""Head sizes every GPU backend's flash attention kernels take (576: MLA's K); ``auto`` is off for others."""

MEASURED_MOE = frozenset({"qwen3moe", "llama"})
"""Per-head MoE architectures whose CPU compute buffer was measured (benchmarks/fit_accuracy.py's MoE shapes): their
layers' steps are the experts' alone (:func:`expert_step`); other MoE architectures keep the dense steps too."""

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
    backend: str = "cuda",
    host_tensors: Sequence[str] = (),
    build: LlamaBuild = BUNDLED,
) -> Estimate:
    """Predict llama.cpp's buffers.

    ``gpu_split`` has one entry per GPU the runtime uses (their free memory, the default split); the GPUs get
    ``gpu_layers`` layers (the output layer counts as one), split by ``settings.tensor_split`` when given, else in
    proportion to ``gpu_split`` (one GPU when it is empty and layers are offloaded). ``buffers`` are the extra CPU
    weight buffers the load uses (``None``: ``settings.cpu_buffers`` on this machine's CPU). ``backend`` is the GPUs'
    (:data:`BACKENDS`). ``host_tensors`` are llama.cpp's ``--override-tensor PATTERN=CPU`` patterns (searched in each
    tensor's name): the tensors they match stay in host memory wherever their layer is. ``build``: the llama.cpp
    allocation rules (the bundled version's; older ones replay published logs, :mod:`modelctl.fit.builds`).
    """
    header = merge([model] if isinstance(model, GGUFHeader) else model)
    shape = shape_of(header)
    if buffers is None:
        buffers = _cpu.weight_buffers(settings.cpu_buffers, _cpu.features())
    ctx = n_ctx or settings.resolved_ctx(shape.n_ctx_train)
    if gpu_layers < 0:  # llama.cpp's -1: all of them
        gpu_layers = shape.n_layer + 1
    n_gpus = len(gpu_split) or (1 if gpu_layers > 0 else 0)
    gpu_layers = min(gpu_layers, shape.n_layer + 1) if n_gpus else 0
    shares = _shares(settings, gpu_split, n_gpus)
    device_of = _layer_devices(shape.n_layer, gpu_layers, shares)
    settings = resolve_flash_attn(settings, shape, backend if gpu_layers else "cpu")
    if n_gpus:  # llama.cpp offers the GPU's pinned host buffer first: mmap makes it the plain file, no copies
        buffers = WeightBuffers(setting=buffers.setting, use_extra_bufts=False)

    place = Placement(
        device_of=device_of,
        n_gpus=n_gpus,
        backend=backend,
        shares=shares,
        settings=settings,
        host_tensors=tuple(re.compile(p) for p in host_tensors),
    )
    weights = _weights(header, shape, place, buffers)
    kv, cells = _kv_cache(shape, settings, ctx, device_of, n_gpus, build)
    overridden = bool(host_tensors) or settings.n_cpu_moe > 0
    copies = PIPELINE_COPIES if _pipelined(shape, settings, gpu_layers, shares, overridden=overridden) else 1
    pulled = _pulled_weights(header, shape, place) if n_gpus and backend in OFFLOAD_BACKENDS else None
    compute = compute_buffer(shape, settings, ctx, device_of, n_gpus, copies=copies, pulled=pulled, build=build)
    output = shape.n_vocab * settings.n_seq * 4
    extra = host_extra(shape, settings, ctx)
    cpu = Buffers(weights=weights[0], kv_cache=kv[0], compute=compute[0], output=output, host_extra=extra)
    gpus = tuple(Buffers(weights=weights[i + 1], kv_cache=kv[i + 1], compute=compute[i + 1]) for i in range(n_gpus))
    return Estimate(n_ctx=ctx, n_ctx_padded=cells, n_layer=shape.n_layer, gpu_layers=gpu_layers, cpu=cpu, gpus=gpus)


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Where the layers went: device per layer (0 the host, 1.. the GPUs) and how the GPUs share them."""

    device_of: list[int]
    n_gpus: int
    backend: str
    shares: list[float]
    settings: RunSettings
    host_tensors: tuple[re.Pattern[str], ...] = ()
    """Tensor overrides to the CPU (``--override-tensor``), besides the experts of ``--n-cpu-moe``."""


def _shares(settings: RunSettings, free: Sequence[float], n_gpus: int) -> list[float]:
    """Each GPU's share of the offloaded layers: ``--tensor-split`` when it has a non-zero entry, else free memory
    (llama.cpp's default); ``split_mode none`` uses the first GPU only."""
    if not n_gpus:
        return []
    if settings.split_mode == "none":
        return [1.0] + [0.0] * (n_gpus - 1)
    given = list(settings.tensor_split[:n_gpus]) + [0.0] * max(n_gpus - len(settings.tensor_split), 0)
    if any(given):
        return given
    shares = [max(float(f), 0.0) for f in free] or [1.0]
    return shares if any(shares) else [1.0] * len(shares)


def _pipelined(
    shape: ModelShape, settings: RunSettings, gpu_layers: int, shares: Sequence[float], *, overridden: bool
) -> bool:
    """llama.cpp's rule for pipeline parallelism: more than one GPU, every layer offloaded, split by layer, the KV
    cache offloaded, no tensor overrides (``overridden``: ``--n-cpu-moe`` is one)."""
    used = sum(1 for share in shares if share > 0)
    return (
        used > 1
        and gpu_layers > shape.n_layer
        and settings.split_mode == "layer"
        and settings.offload_kqv
        and not overridden
    )


def resolve_flash_attn(settings: RunSettings, shape: ModelShape, backend: str) -> RunSettings:
    """``--flash-attn auto`` as llama.cpp resolves it: on where the device running attention has a kernel for the
    model's head sizes (every CPU does), else off; off too when offloaded layers keep their KV cache on the host
    (``--no-kv-offload``: the attention lands on another device than its layer, which llama.cpp's check refuses).
    Other settings come back unchanged."""
    if settings.flash_attn != "auto":
        return settings
    heads = {layer.k_len for layer in shape.layers if layer.has_kv}
    supported = backend == "cpu" or (heads <= FLASH_HEAD_SIZES and settings.offload_kqv)
    return replace(settings, flash_attn="on" if supported else "off")


def _layer_devices(n_layer: int, gpu_layers: int, split: Sequence[float]) -> list[int]:
    """Device per layer 0..n_layer (the last is the output layer): 0 is the CPU, 1.. the GPUs (llama.cpp's
    ``upper_bound`` over the cumulative split points)."""
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


def _gpu_bytes(t: TensorInfo, backend: str = "cuda") -> int:
    """What a GPU backend allocates for a tensor: its bytes, the CUDA/ROCm row padding, the alignment."""
    size = t.n_bytes
    block, _ = type_sizes(t.ggml_type)
    if backend in ROW_PADDED and block > 1 and t.shape[0] % CUDA_ROW_PADDING:
        size += row_bytes(t.ggml_type, CUDA_ROW_PADDING - t.shape[0] % CUDA_ROW_PADDING)
    return _align(size, GPU_ALIGN)


EXPERTS = _cpu.EXPERT_TENSORS
"""llama.cpp's ``LLM_FFN_EXPS_REGEX``: the tensors ``--n-cpu-moe`` keeps on the host."""


def _host_expert(t: TensorInfo, shape: ModelShape, place: Placement) -> bool:
    """A tensor kept on the host by a tensor override to the CPU's buffer type: an expert tensor of the first
    ``--n-cpu-moe`` layers, or one that an ``--override-tensor`` pattern matches."""
    if any(p.search(t.name) for p in place.host_tensors):
        return True
    layer = tensor_layer(t, shape.n_layer)
    return 0 <= layer < min(place.settings.n_cpu_moe, shape.n_layer) and EXPERTS.search(t.name) is not None


def _device(t: TensorInfo, shape: ModelShape, place: Placement) -> int:
    layer = tensor_layer(t, shape.n_layer)
    if layer < 0 or _host_expert(t, shape, place):
        return 0
    return place.device_of[layer]


@dataclass(frozen=True, kw_only=True, slots=True)
class Pulled:
    """Host weights a GPU that offloads large batches copies into its compute buffer, one at a time: the largest
    matrix of the layers (or experts) kept on the host, the output matrix when it stays there, and the widest K
    plus V rows of a layer whose cache is in host memory (its attention then runs on the GPU too)."""

    matrix: int = 0
    output: int = 0
    kv_rows: int = 0
    layers: bool = False
    """Whether whole layers (not only experts) stay on the host."""


def _pulled_weights(header: GGUFHeader, shape: ModelShape, place: Placement) -> Pulled:
    matrix = output = 0
    for t in header.tensors:
        if _device(t, shape, place) or not _cpu.uses_mul_mat(t.name, t.shape):
            continue
        size = _gpu_bytes(t, place.backend)
        if tensor_layer(t, shape.n_layer) >= shape.n_layer:
            output = max(output, size)
        else:
            matrix = max(matrix, size)
    k_type, v_type = CACHE_TYPES[place.settings.type_k], CACHE_TYPES[place.settings.type_v]
    kv_rows = 0
    host_layers = False
    for il, layer in enumerate(shape.layers):
        if place.device_of[il]:
            continue
        host_layers = True
        if layer.has_kv:
            width = row_bytes(k_type, layer.n_head_kv * layer.k_len)
            width += 0 if shape.mla else row_bytes(v_type, layer.n_head_kv * layer.v_len)
            kv_rows = max(kv_rows, width)
    if not place.settings.offload_kqv:
        host_layers = True
        kv_rows = max(
            (
                row_bytes(k_type, layer.n_head_kv * layer.k_len) + row_bytes(v_type, layer.n_head_kv * layer.v_len)
                for layer in shape.layers
                if layer.has_kv
            ),
            default=0,
        )
    return Pulled(matrix=matrix, output=output, kv_rows=kv_rows, layers=host_layers)


def _weights(header: GGUFHeader, shape: ModelShape, place: Placement, buffers: WeightBuffers) -> list[int]:
    out = [0] * (place.n_gpus + 1)
    spans: dict[tuple[int, int], tuple[int, int]] = {}  # (device, file) -> (first, last) of its mapped tensors
    placed: list[tuple[TensorInfo, int]] = [(t, _device(t, shape, place)) for t in header.tensors]
    embd = header.tensor("token_embd.weight")
    if shape.tied_embeddings and embd is not None:
        placed.append((embd, place.device_of[shape.n_layer]))  # the output layer's copy (same bytes on the CPU)
        tied_output = len(placed) - 1
    else:
        tied_output = -1
    row_split = place.settings.split_mode == "row" and sum(1 for s in place.shares if s > 0) > 1
    total_share = sum(place.shares) or 1.0
    for i, (t, dev) in enumerate(placed):
        if dev and place.backend in MAPPED:
            _span(spans, (dev, t.file), t)
        elif dev and row_split and len(t.shape) >= 2 and tensor_layer(t, shape.n_layer) < shape.n_layer:
            for gpu, share in enumerate(place.shares, start=1):  # rows cut over the GPUs (CUDA_Split)
                out[gpu] += _align(int(_gpu_bytes(t, place.backend) * share / total_share), GPU_ALIGN)
        elif dev:
            out[dev] += _gpu_bytes(t, place.backend)
        else:
            # an override to the CPU's buffer type picks from the host list: no extra buffer where they are off
            pinned = not buffers.use_extra_bufts and _host_expert(t, shape, place)
            copy = 0 if pinned else _cpu_copy(t, buffers, tied=i == tied_output)
            if copy:
                out[0] += copy
            else:
                _span(spans, (0, t.file), t)
    for (dev, _), (first, last) in spans.items():
        out[dev] += max(last - first, 0)
    return out


def _span(spans: dict[tuple[int, int], tuple[int, int]], key: tuple[int, int], t: TensorInfo) -> None:
    first, last = spans.get(key, (1 << 62, 0))
    spans[key] = (min(first, t.offset), max(last, t.offset + t.n_bytes))


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


def kv_cells(shape: ModelShape, settings: RunSettings, n_ctx: int, build: LlamaBuild = BUNDLED) -> tuple[int, int]:
    """(cells of a full-attention layer, cells of a sliding-window layer), over all sequences.

    A unified cache (``kv_unified``) is one stream of ``n_ctx`` cells whose window holds every sequence's
    (``n_swa * n_seq + n_ubatch``); otherwise each sequence has a stream of its own share of the context and its
    own window (``llama_kv_cache_iswa``)."""
    streams = settings.n_seq if settings.n_seq > 1 and not settings.kv_unified else 1
    pad = build.kv_pad(settings.flash_attention)
    per_stream = _align(_align(n_ctx, pad) // streams, pad)
    swa = per_stream
    if shape.swa_any and not settings.swa_full and build.swa_cache:
        n_batch = min(n_ctx, settings.n_batch)
        n_ubatch = min(n_batch, settings.n_ubatch)
        window = shape.n_swa * (settings.n_seq if streams == 1 else 1) + n_ubatch
        swa = _align(min(per_stream, window), pad)
    return per_stream * streams, swa * streams


def _kv_cache(
    shape: ModelShape, settings: RunSettings, n_ctx: int, device_of: list[int], n_gpus: int, build: LlamaBuild
) -> tuple[list[int], int]:
    out = [0] * (n_gpus + 1)
    cells, swa_cells = kv_cells(shape, settings, n_ctx, build)
    k_type, v_type = CACHE_TYPES[settings.type_k], CACHE_TYPES[settings.type_v]
    v_trans = not settings.flash_attention
    attn = [layer for layer in shape.layers if layer.has_kv]
    v_max = max((layer.n_head_kv * layer.v_len for layer in attn), default=0)
    for il, layer in enumerate(shape.layers):
        dev = device_of[il] if settings.offload_kqv else 0
        if layer.recurrent:
            out[dev] += (shape.recurrent_r + shape.recurrent_s) * 4 * max(settings.n_seq, 1)
            continue
        if not layer.has_kv:
            continue
        n = swa_cells if layer.swa else cells
        size = row_bytes(k_type, layer.n_head_kv * layer.k_len) * n
        if not shape.mla or build.mla_v:
            width = v_max if v_trans else layer.n_head_kv * layer.v_len
            size += row_bytes(v_type, width) * n
        out[dev] += size
    return out, cells


def compute_buffer(
    shape: ModelShape,
    settings: RunSettings,
    n_ctx: int,
    device_of: Sequence[int] = (),
    n_gpus: int = 0,
    *,
    copies: int = 1,
    pulled: Pulled | None = None,
    build: LlamaBuild = BUNDLED,
) -> list[int]:
    """The compute buffer per device (CPU first), reserved for the worst-case batch.

    llama.cpp reserves a graph of ``T = min(n_ubatch, n_batch, n_ctx)`` tokens, every one an output, against the
    full cache of ``K`` cells; the buffer is the high-water mark of ggml's graph allocator. That mark is one of two
    steps plus what is alive around it (``E``, ``F``: embedding and widest feed-forward width; ``masks``: one
    ``K x T`` mask per attention kind, float32, or f16 with flash attention)::

        without flash attention: max(V*T*4 + 3*E*T*4,                      the logits (5*E*T*4 if soft-capped)
                                     max_l(K*T*H_l*4) + masks + min(2*F, 8*E)*T*4 + 3*E*T*4,  the scores
                                     masks + 3*F*T*4 + 3*E*T*4 + KV*T*4)    the feed-forward step
        with flash attention:    max(V*T*4 + 5*E*T*4 (+ masks when small), masks + 3*F*T*4 + 4*E*T*4)

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

    MLA models (deepseek2 and its kin) run a different attention: each head's query is absorbed into the latent
    width, so their attention step is the query tensors (:func:`mla_attention`), and their MoE layers' step the
    selected experts' rows (:func:`moe_step`); a GPU holds the same query tensors on the masks and three batch rows.
    Per-head MoE models (qwen3moe, Mixtral) have no dense feed-forward blocks: their step is the selected experts'
    rows beside the query, the K and V rows and three batch rows (:func:`expert_step`), and their attention step
    is the query twice (its normed or roped copy) on the K and V rows and three batch rows, under the scores
    without flash attention.

    On a backend that offloads large batches (:data:`OFFLOAD_BACKENDS`, ``pulled`` given) with a batch of
    :data:`OFFLOAD_MIN_BATCH` tokens or more, the products of the layers and experts kept on the host run on the
    first GPU too: it copies their weights in one at a time (llama.cpp's scheduler starts a new split at each such
    weight so that the copies share one block), so its buffer holds the largest of them beside one step's
    activations, and the attention of a host layer beside that layer's K and V; the host computes only what a
    one-token batch needs there, besides the inputs and the batch's hidden state.
    """
    cells, swa_cells = kv_cells(shape, settings, n_ctx, build)
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
    outputs = min(settings.n_seq, t) if build.one_output_per_seq else t
    logits = shape.n_vocab * outputs * 4
    variable = len({(layer.n_head, layer.n_head_kv, layer.n_ff) for layer in shape.layers}) > 1
    scores = attention_scores(shape, cells, swa_cells, t)  # without flash attention
    kv_t = kv_rows(shape, t)
    ffn_step = 0
    dense_ffn = 3 * f_t + 6 * e_t
    if fa:
        tail = 5 if shape.softcap_logits or variable else 3
        out_step = logits + tail * e_t + (masks if variable or masks * 16 < logits else 0)
        attention = masks + 3 * f_t + 4 * e_t
    else:
        out_step = logits + (5 if shape.softcap_logits else 3) * e_t + (masks + 2 * e_t if variable else 0)
        if e_t >= FRAGMENT_ROWS:
            # batch rows of 1 MiB and more no longer fit the holes the layers leave: the logits land higher
            out_step += 3 * e_t
        # the previous layer's feed-forward blocks below the scores, as far as the holes reach (see above)
        attention = scores + masks + min(2 * f_t, 8 * e_t) + 3 * e_t
        ffn_step = masks + 3 * f_t + 3 * e_t + kv_t
    if shape.mla:
        attention = mla_attention(shape, t, cells, masks, e_t, f_t, fa=fa)
        ffn_step = max(ffn_step, moe_step(shape, t))
    elif shape.n_expert and shape.n_expert_used:
        # MoE layers: no feed-forward block below the scores, but the query twice (qwen3's normed copy) and the K
        # and V rows, which stay alive through the experts too; no dense gate, up and SwiGLU blocks, the experts'
        # own (:func:`expert_step`). Measured for qwen3moe and llama (Mixtral) only: other MoE architectures
        # (gpt-oss's biases, qwen2moe's shared experts) keep the dense steps as a floor.
        moe_attention = (0 if fa else scores) + masks + 2 * query_width(shape) * t * 4 + kv_t + 3 * e_t
        # the DeepSeek graph's experts are the MLA family's (:func:`moe_step`), not the per-head models' own
        moe_ffn = moe_step(shape, t) if shape.arch == "deepseek2" else masks + kv_t + expert_step(shape, t)
        if shape.arch in MEASURED_MOE:
            attention, ffn_step, dense_ffn = moe_attention, moe_ffn, 0
        else:
            attention, ffn_step = max(attention, moe_attention), max(ffn_step, moe_ffn)
        if fa and shape.arch == "deepseek2":
            attention = max(attention, masks + deepseek_heads(shape, t))
    out_step += small
    attention += small
    recurrent = 0
    if any(layer.recurrent for layer in shape.layers):
        recurrent = (shape.recurrent_r + shape.recurrent_s) * 4 * max(settings.n_seq, 1) * 3 + 4 * f_t
    peak_layers = max(attention, recurrent, dense_ffn, ffn_step + small)
    if not n_gpus or not device_of:
        return [max(out_step, peak_layers)]
    # a GPU's allocator packs the graph tighter than the CPU's without flash attention (fitted to llama.cpp's CUDA
    # and Metal reports, benchmarks/gpu_logs.py): the scores stand on the masks, one feed-forward block and two batch
    # rows; the logits on one batch row. With flash attention it holds one batch row more than the CPU (the input
    # embeddings copied in: an MI300X llama-server load whose one-output reservation leaves the layers' step
    # deciding, 32.09 MiB logged, 32.26 predicted; tests/unit/fit/test_fit_flash_layers.py has the CPU's step)
    if shape.mla:
        # MLA: the absorbed query tensors (and without flash attention the scores) on the masks and three batch
        # rows (the DeepSeek-V3 CUDA record, its tensor overrides replayed, so not pipelined: 788 MiB logged and
        # predicted)
        mla_scores = 0 if fa else cells * t * shape.n_head_max * 4
        gpu_layers = max(masks + mla_queries(shape, t) + mla_scores + 3 * e_t, 3 * f_t + 2 * e_t)
    elif fa:
        gpu_layers = max(masks + 3 * f_t + 5 * e_t + small, recurrent)
        if shape.arch == "deepseek2":  # no GPU log yet: the CPU's per-head tensors, batch rows and all
            gpu_layers = max(gpu_layers, masks + deepseek_heads(shape, t))
    else:
        gpu_layers = max(scores + masks + f_t + 2 * e_t, 3 * f_t + 2 * e_t, recurrent)
        if shape.n_expert and shape.n_expert_used:
            # MoE layers, as on the CPU: the query twice and the K and V rows beside the scores (the per-head
            # DeepSeek records: 1174 MiB logged on Vulkan, 2322 on eight ROCm GPUs)
            gpu_layers = max(gpu_layers, scores + masks + 2 * query_width(shape) * t * 4 + kv_t + 2 * e_t)
    gpu_out = logits + (3 if shape.softcap_logits else 1) * e_t
    out = [0] * (n_gpus + 1)
    output_dev = device_of[-1]
    # the host keeps the inputs for the GPUs: the batch's embeddings (one per pipeline stage), the masks, token
    # ids and positions
    # the masks stay float32 there (a GPU casts its copy for flash attention), and the KV writes' row indices
    # (``set_rows``: one per token for K, one per value for a transposed V) are inputs too; the GPUs copy the indices
    n_masks = 1 + (1 if shape.swa_any else 0)
    v_rows = 1 if fa else max((layer.n_head_kv * layer.v_len for layer in shape.layers if layer.has_kv), default=0)
    idxs = 0 if (shape.mla and fa) or not build.set_rows else n_masks * t * 8 * (1 + v_rows)
    inputs = e_t * copies + n_masks * cells * t * 4 + 6 * t * 4 + idxs
    offload = pulled is not None and t >= OFFLOAD_MIN_BATCH
    for dev in set(device_of[:-1]):
        out[dev] = max(out[dev], peak_layers if dev == 0 else gpu_layers)
    out[output_dev] = max(out[output_dev], out_step if output_dev == 0 else gpu_out)
    if offload and pulled is not None:
        steps = [pulled.matrix + 3 * f_t + 2 * e_t if pulled.matrix else 0]
        if pulled.output:
            steps.append(pulled.output + logits + e_t)
        if pulled.layers:
            steps.append(gpu_layers + pulled.kv_rows * cells)
            # the host's own graph is the one-token batch (its products are not offloaded); a large batch leaves
            # it the inputs and, where layers meet a GPU's, one hidden state
            one_token = attention_scores(shape, cells, swa_cells, 1) + 3 * ff * 4 + small
            one_token += shape.n_vocab * 4 if output_dev == 0 else 0
            meet = e_t if any(device_of) else 0
            out[0] = max(inputs + meet, one_token)
        out[1] = max([out[1], *steps])
    if out[0] == 0:
        out[0] = inputs
    for dev in range(1, n_gpus + 1):
        if out[dev]:
            out[dev] += idxs
        if out[dev] and copies > 1:
            # every input of a pipeline stage is kept once per copy (ggml's scheduler marks the copies as outputs,
            # so none is reused): the hidden state it receives, the float32 masks and the KV row indices
            out[dev] += (copies - 1) * (e_t + n_masks * cells * t * 4 + idxs)
    return out


def mla_queries(shape: ModelShape, t: int) -> int:
    """The query tensors of an MLA layer's absorbed graph (llama.cpp's ``llm_build_deepseek2``), alive together
    where the query is assembled: each head's no-rope query absorbed into the latent width
    (``q_nope_absorbed``, ``kv_lora_rank`` wide), the query that joins it with the roped part (``Qcur``,
    ``kv_lora_rank + n_rot``), the roped part itself, and the decompressed query it came from (``key_length_mla``).
    For DeepSeek-V3 (128 heads) that is 336 MiB per 512 tokens, where a per-head cache model's query is 0.5 MiB."""
    per_head = shape.kv_lora_rank + (shape.kv_lora_rank + shape.n_rot) + shape.n_rot + shape.mla_k_len
    return shape.n_head_max * per_head * t * 4


def mla_attention(shape: ModelShape, t: int, cells: int, masks: int, e_t: int, f_t: int, *, fa: bool) -> int:
    """The attention step of an MLA model on the CPU: the query tensors (:func:`mla_queries`) and one more block
    of the decompressed query's size, above the masks and two batch rows; without flash attention the scores
    (``cells x T`` per head) and one feed-forward block on top, unless the scores fit the hole
    ``q_nope_absorbed`` left (a cache no wider than a head's absorbed query). Fitted to llama.cpp's reports for
    DeepSeek-V3-, V2- and Kimi-K2-shaped files (benchmarks/fit_accuracy.py; tests/unit/fit/test_fit_mla.py holds
    the figures)."""
    step = masks + mla_queries(shape, t) + shape.n_head_max * shape.mla_k_len * t * 4 + 2 * e_t
    if not fa and cells > shape.kv_lora_rank + shape.n_rot:
        step += cells * t * shape.n_head_max * 4 + f_t
    return step


def moe_step(shape: ModelShape, t: int) -> int:
    """A MoE layer's feed-forward on the CPU: the selected experts' gate, up and SwiGLU rows (``n_ff_exp`` each per
    expert used) and their down projections (``n_embd`` each per expert used) before they are weighted and summed,
    besides five and a half batch rows. 0 when every layer is dense. Used for MLA models only so far: it is what their
    narrow-headed shapes (16-64 heads) peak on; the per-head models' MoE rows were calibrated without it."""
    if not shape.n_expert or not shape.n_expert_used or shape.n_layer_dense_lead >= shape.n_layer:
        return 0
    used = shape.n_expert_used
    return (3 * shape.n_ff_exp * used + shape.n_embd * used) * t * 4 + 22 * shape.n_embd * t


def expert_step(shape: ModelShape, t: int) -> int:
    """A per-head model's MoE feed-forward on the CPU, without the masks: the layer's query and three batch rows
    below the selected experts' gate, up and SwiGLU blocks (``n_ff_exp`` rows each per expert used) and their down
    block (``n_embd`` rows per expert used), each placed as ggml's allocator places it (:func:`_place`): in the
    smallest free hole that holds it, else on top. The holes are the attention output's block (the query's width,
    less the router's rows) and, once gate and up are computed, the normed input's (a batch row); gate and up are
    freed before the down block. 0 when every layer is dense.

    Matches llama.cpp's reports for qwen3moe files of 1024-4096 wide embeddings, 2-8 experts used of 768-3072, and
    Mixtral's widths (tests/unit/fit/test_fit_moe_compute.py holds the figures)."""
    if not shape.n_expert or not shape.n_expert_used:
        return 0
    used, e, q, router = shape.n_expert_used, shape.n_embd, query_width(shape), 2 * shape.n_expert
    size = (shape.n_ff_exp or shape.n_ff_max) * used
    # rows below the top of the feed-forward input (one batch row): the attention output's block past the
    # router's logits and their sort, and below it the normed input
    holes = [(-e - q + router, q - router)]
    gate, top = _place(holes, 0, size)
    up, top = _place(holes, top, size)
    top = _free(holes, top, (-2 * e - q, e))  # the normed input: read by gate and up only
    _, top = _place(holes, top, size)  # SwiGLU
    peak = top
    for block in (gate, up):
        top = _free(holes, top, (block, size))
    _, top = _place(holes, top, e * used)  # down
    return (q + 3 * e + max(peak, top)) * t * 4


def _place(holes: list[tuple[int, int]], top: int, size: int) -> tuple[int, int]:
    """ggml's allocator: a block of ``size`` goes to the smallest free hole that holds it, else on top. The
    block's offset and the new top."""
    fits = [h for h in holes if h[1] >= size]
    if not fits:
        return top, top + size
    hole = min(fits, key=lambda h: h[1])
    holes.remove(hole)
    if hole[1] > size:
        holes.append((hole[0] + size, hole[1] - size))
    return hole[0], top


def _free(holes: list[tuple[int, int]], top: int, block: tuple[int, int]) -> int:
    """Free ``block`` into ``holes``, merged with its free neighbours; a hole that reaches the top lowers it."""
    start, end = block[0], block[0] + block[1]
    for hole in [h for h in holes if h[0] + h[1] == start or h[0] == end]:
        holes.remove(hole)
        start, end = min(start, hole[0]), max(end, hole[0] + hole[1])
    if end >= top:
        return start
    holes.append((start, end - start))
    return top


def deepseek_heads(shape: ModelShape, t: int) -> int:
    """The attention of a DeepSeek file without the split MLA tensors (a per-head cache) with flash attention, on
    the CPU: per head the query, the query joined to its roped part, the decompressed K-nope and V rows, K joined to
    the repeated rope part, and V made contiguous (``3 k + (k - rope) + 2 v`` values), beside four batch rows.
    Measured on llama.cpp's reports for two-layer files of DeepSeek-V2 and -V3 widths: 142.01 to 568.03 MiB, exact
    to 0.03 MiB at 256-1024 tokens and 4K-16K cells (f16 cache; a q8_0 cache takes less)."""
    k = max((layer.k_len for layer in shape.layers if layer.has_kv), default=0)
    v = max((layer.v_len for layer in shape.layers if layer.has_kv), default=0)
    per_head = 3 * k + (k - shape.n_rot) + 2 * v
    return (shape.n_head_max * per_head + 4 * shape.n_embd) * t * 4


def attention_scores(shape: ModelShape, cells: int, swa_cells: int, t: int) -> int:
    """The widest layer's attention scores without flash attention: one float32 per cell, token and head."""
    return max((n * t * layer.n_head * 4 for layer, n in attn_layers_of(shape, cells, swa_cells)), default=0)


def kv_rows(shape: ModelShape, t: int) -> int:
    """The widest attention layer's K and V rows for ``t`` tokens, float32."""
    widths = (layer.n_head_kv * (layer.k_len + layer.v_len) for layer in shape.layers if layer.has_kv)
    return max(widths, default=0) * t * 4


def query_width(shape: ModelShape) -> int:
    """The widest attention layer's query rows (``n_head x key_length``; wider than ``n_embd`` in Qwen3)."""
    return max((layer.n_head * layer.k_len for layer in shape.layers if layer.has_kv), default=0)


def attn_layers_of(shape: ModelShape, cells: int, swa_cells: int) -> list[tuple[Layer, int]]:
    """The layers with a KV cache and the cells each keeps."""
    return [(layer, swa_cells if layer.swa else cells) for layer in shape.layers if layer.has_kv]


def host_extra(shape: ModelShape, settings: RunSettings, n_ctx: int) -> int:
    """Host memory llama-cpp-python holds besides llama.cpp's buffers."""
    scores = settings.n_batch * shape.n_vocab * 4
    tokens = n_ctx * 4
    candidates = shape.n_vocab * 12
    batch = settings.n_batch * min(n_ctx * 4 + 16, 4096)  # seq_id rows of n_ctx ints: the touched pages
    return scores + tokens + candidates + batch
