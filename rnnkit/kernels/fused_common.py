"""What the fused layers (Elman, LSTM, GRU) share: one autograd Function that
runs any cell's loops, the products over all steps, and the plumbing between
torch and the numba loops.

Each cell is a :class:`Cell` (``fused_rnn.Elman``, ``fused_lstm.LSTM``,
``fused_gru.GRU``) that :class:`FusedLayer` runs, for ``D`` directions,
``G`` gates of hidden size ``H`` and outputs of size ``P``:

forward
    :func:`project_inputs` computes every step's input projection
    ``W_ih x_t + b_ih`` (plus whatever of ``b_hh`` the cell lets it fold in)
    for all directions into a ``(T, N, D*G*H)`` buffer, in rnnkit's own
    threads; the cell's forward loop then runs the recurrence on it, each
    direction and batch chunk on a thread (:func:`run_pieces`).
backward
    the cell's backward loop walks the steps back and leaves the gradient of
    every gate pre-activation in a buffer; :func:`weight_grads` turns that
    into ``dL/dx``, ``dL/dW_ih``, ``dL/dW_hh`` and the bias gradients by
    products and sums over all steps at once. A backward pass that must
    itself be differentiable (``create_graph=True``) is
    :func:`reference_backward` instead.

What the forward pass keeps for the backward one, it keeps only when
autograd records the call (:func:`backward_may_follow`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import threading
import weakref
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels import blas, dense, numba_ops, parallel, reference
from rnnkit.kernels.reference import DirectionWeights


def as_array(t: Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor, sharing its memory. A copy only if ``t``
    is not contiguous, which the buffers the loops write into always are."""
    return t.detach().contiguous().numpy()


def as_arrays(tensors: list[Tensor | None], shape: tuple[int, ...], dtype: torch.dtype) -> list[np.ndarray]:
    """One array per direction for an optional parameter: the tensor's, or,
    where it is ``None`` (no bias, no projection), zeros of ``shape``, which
    is how the loops are told there is none."""
    return [torch.zeros(shape, dtype=dtype).numpy() if t is None else as_array(t) for t in tensors]


def step_weights(tensors: list[Tensor | None], dtype: torch.dtype, steady: bool = False) -> list[np.ndarray]:
    """Each direction's ``w`` for the per-step product ``a @ w``
    (:func:`rnnkit.kernels.numba_ops.product`): ``(K, M)`` C-contiguous,
    aligned to the vector size, its columns padded with zeros to whole
    vectors; an empty ``(0, 0)`` array where the tensor is ``None`` (no
    projection), of ``dtype``. Pass ``W^T`` for a forward product ``h @ W^T``.

    Inside a call that :func:`reuses_call_memory`, the arrays live in
    memory kept for the next call, and must not outlive the call.
    ``steady``: the weights are likely the same as at the last call, as in
    inference; then the arrays may be :data:`_STEADY`'s, shared by every
    call (the loops only read them)."""
    arrays = []
    for t in tensors:
        if t is None:
            arrays.append(torch.zeros(0, 0, dtype=dtype).numpy())
        elif steady:
            arrays.append(_STEADY.packed(t))
        else:
            arrays.append(_pack(t, _memory))
    return arrays


SMALL_TRANSPOSE = 1 << 14
"""Elements of a transposed weight up to which numpy packs it straight from
its strides, without torch's blocked copy first (measured, ``(32, 128)``:
2.1 µs against 6.1; level at ``(64, 256)``)."""


def _pack(t: Tensor, memory: Callable[[int, torch.dtype], np.ndarray]) -> np.ndarray:
    """:func:`step_weights`' array for one tensor, in memory from ``memory(size, dtype)``."""
    k, m = t.shape
    if t.is_contiguous() or k * m <= SMALL_TRANSPOSE:
        source = t.detach().numpy()
    else:  # torch transposes in cache-sized blocks (numpy, element by element, 5 times slower)
        source = memory(k * m, t.dtype).reshape(k, m)
        torch.from_numpy(source).copy_(t.detach())
    width = numba_ops.padded_width(m, source.itemsize)
    slack = numba_ops.VECTOR_BYTES // source.itemsize
    buffer = memory(k * width + slack, t.dtype)
    start = (-buffer.ctypes.data % numba_ops.VECTOR_BYTES) // source.itemsize
    w = buffer[start : start + k * width].reshape(k, width)
    w[:, :m] = source
    if width > m:
        w[:, m:] = 0
    return w


class _SteadyWeights:
    """The packed weights of inference calls, kept from call to call.

    Each is kept with a copy of the weight it was packed from, and used again
    only while the weight's bytes are the same: whatever changed it in place
    (an optimiser step, ``load_state_dict``, an edit through ``.data``, which
    leaves the version counter as it was) is seen. Comparing costs a tenth of
    packing again (measured, ``(2048, 512)``: 0.09 ms against 1.1). The
    packing reads the copy, not the weight, so that a change made by another
    thread meanwhile cannot leave a packed array that the copy does not
    describe."""

    LIMIT_BYTES = 128 << 20
    """The most kept, copies and packed arrays together (twice the weights'
    own size). Past it, the entries of weights no longer alive go first;
    what still does not fit is packed at every call, as in training (a
    cache that cycled through more than it holds would miss every time)."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[Tensor, np.ndarray, weakref.ref]] = {}  # the copy, the packed array
        self._bytes = 0
        self._lock = threading.Lock()

    def packed(self, t: Tensor) -> np.ndarray:
        lying = t if t.is_contiguous() else t.t()  # the weight as it lies in memory
        key = (lying.data_ptr(), tuple(t.shape), t.is_contiguous(), t.dtype)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and _same_bits(entry[0], lying):
            return entry[1]
        now = lying.detach().numpy()
        k, m = t.shape
        size = now.nbytes + k * numba_ops.padded_width(m, now.itemsize) * now.itemsize  # the copy, the packed array
        with self._lock:
            self._drop(key)
            if self._bytes + size > _SteadyWeights.LIMIT_BYTES:
                for dead in [other for other, (_, _, alive) in self._entries.items() if alive() is None]:
                    self._drop(dead)
            fits = self._bytes + size <= _SteadyWeights.LIMIT_BYTES
            if fits:
                self._bytes += size  # taken now, so that another thread's weights count it
        if not fits:
            return _pack(t, _memory)
        copy = torch.from_numpy(now.copy())
        packed = _pack(copy if t.is_contiguous() else copy.t(), lambda count, dtype: np.empty(count, now.dtype))
        base = t._base if t._base is not None else t  # the weight itself, for a transposed view
        with self._lock:
            self._drop(key)  # another thread's, packed meanwhile
            self._entries[key] = (copy, packed, weakref.ref(base))
        return packed

    def _drop(self, key: tuple) -> None:
        """Forget ``key``'s entry, if any (under the lock)."""
        gone = self._entries.pop(key, None)
        if gone is not None:
            self._bytes -= gone[0].numel() * gone[0].element_size() + gone[1].nbytes


_STEADY = _SteadyWeights()


def _libc_memcmp() -> Callable[[int, int, int], int] | None:
    """The C library's ``memcmp(a, b, n)`` on addresses, or ``None`` where it is not found."""
    try:
        memcmp = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError, TypeError):
        return None
    memcmp.restype, memcmp.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return memcmp


_MEMCMP = _libc_memcmp()


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Whether the CPU tensors ``a`` and ``b`` hold the same bits (so NaN
    equals itself): one ``memcmp`` where both are contiguous (measured: 1.4
    µs for a ``(128, 32)`` weight, against 2.8 for ``np.array_equal`` of
    numpy views; 0.30 ms for ``(2048, 512)``, against 0.38), else compared
    element by element."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if _MEMCMP is not None and a.is_contiguous() and b.is_contiguous():
        return _MEMCMP(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0
    a_a, b_a = a.detach().numpy(), b.detach().numpy()
    bits = np.uint32 if a_a.itemsize == 4 else np.uint64
    return np.array_equal(a_a.view(bits), b_a.view(bits))


class _CallMemory(threading.local):
    """Memory for packed weights and scratch arrays, kept from call to call
    on each thread.

    A layer packs its weights at every call, and fresh memory faults on its
    first write, page by page: measured, that was 1-2 ms of the 2 ms it took
    to pack a 4 MiB weight (``H = 512``) into memory just allocated."""

    LIMIT_BYTES = 64 << 20
    """The most kept on one thread between calls."""

    def __init__(self) -> None:
        self.free: dict[tuple[int, np.dtype], list[np.ndarray]] = {}  # by (size, dtype)
        self.kept_bytes = 0
        self.taken: list[np.ndarray] | None = None  # in use by the current call; None outside one


_CALL_MEMORY = _CallMemory()


def reuses_call_memory(function: Callable) -> Callable:
    """Decorate a fused Function's ``forward`` or ``backward``: the packed
    weights of :func:`step_weights` and the arrays of :func:`scratch` during
    the call take memory that earlier calls on the same thread left, and
    leave theirs for later ones."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        memory = _CALL_MEMORY
        outer, memory.taken = memory.taken, []
        try:
            return function(*args, **kwargs)
        finally:
            for buffer in memory.taken:
                if memory.kept_bytes + buffer.nbytes <= _CallMemory.LIMIT_BYTES:
                    memory.free.setdefault((buffer.size, buffer.dtype), []).append(buffer)
                    memory.kept_bytes += buffer.nbytes
            memory.taken = outer

    return call


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """numpy's twin of a torch dtype (asked once per dtype: it makes a tensor)."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def _memory(size: int, dtype: torch.dtype) -> np.ndarray:
    """A 1-D array of ``size`` elements: kept memory inside a call that
    :func:`reuses_call_memory`, else new."""
    memory = _CALL_MEMORY
    np_dtype = _numpy_dtype(dtype)
    if memory.taken is None:
        return np.empty(size, dtype=np_dtype)
    free = memory.free.get((size, np_dtype))
    if free:
        buffer = free.pop()
        memory.kept_bytes -= buffer.nbytes
    else:
        buffer = np.empty(size, dtype=np_dtype)
    memory.taken.append(buffer)
    return buffer


def scratch(shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
    """A C-contiguous array of ``shape`` for the loops to work in, which lives
    only as long as the current call that :func:`reuses_call_memory` (not
    initialised: the loops write it before they read it)."""
    return _memory(math.prod(shape), dtype).reshape(shape)


def scratch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A tensor over :func:`scratch` memory: it must not outlive the call."""
    return torch.from_numpy(scratch(shape, dtype))


class _BufferPool:
    """Memory for rnnkit's large tensors that outlive a call: what forward
    passes keep for their backward passes (the activations of every step),
    and gradients handed back into torch's graph. It comes back when the
    tensor over it dies, and goes to a later call asking for the same number
    of bytes.

    A training step allocates tens of MiB of such buffers and frees them; the
    C allocator returns the freed top of its heap to the system, and the next
    step's buffers fault in again page by page (measured: 2000-4000 faults a
    step, 1-2 ms, for the layer-norm LSTM at ``T=1000 N=4 H=64``). The memory
    goes back to the pool only when no tensor, view or array over it is left
    (a finalizer on the array the tensor was made from, which the tensor's
    storage holds), so it is never handed out while in use."""

    MIN_BYTES = 1 << 20
    """Smaller buffers come from torch's allocator as usual."""

    LIMIT_BYTES = 256 << 20
    """The most kept idle; a buffer handed back beyond it is freed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # buffers come back from whichever thread drops the last reference
        self.free: dict[int, list[np.ndarray]] = {}  # by size in bytes
        self.idle_bytes = 0

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        np_dtype = _numpy_dtype(dtype)
        nbytes = math.prod(shape) * np_dtype.itemsize
        if nbytes < self.MIN_BYTES:
            return torch.empty(shape, dtype=dtype)
        with self.lock:
            free = self.free.get(nbytes)
            base = free.pop() if free else None
            if base is not None:
                self.idle_bytes -= base.nbytes
        if base is None:
            base = _new_block(nbytes + numba_ops.VECTOR_BYTES)
        start = -base.ctypes.data % numba_ops.VECTOR_BYTES
        array = base[start : start + nbytes].view(np_dtype).reshape(shape)
        weakref.finalize(array, self._give_back, base, nbytes)
        return torch.from_numpy(array)

    def _give_back(self, base: np.ndarray, nbytes: int) -> None:
        with self.lock:
            if self.idle_bytes + base.nbytes <= self.LIMIT_BYTES:
                self.free.setdefault(nbytes, []).append(base)
                self.idle_bytes += base.nbytes


def _new_block(size: int) -> np.ndarray:
    """A new block of ``size`` bytes for :class:`_BufferPool`, after
    :func:`make_heap_room` for it."""
    make_heap_room(size)
    return np.empty(size, dtype=np.uint8)


_heap_room = [0]  # the largest block make_heap_room has freed so far


def make_heap_room(size: int) -> None:
    """Free an untouched block of ``size`` bytes, once for each size larger
    than any before.

    glibc's allocator serves a request this large (over 128 KiB) by a
    mapping of its own, and only when such a mapping is freed does it raise
    the size from which it maps (up to 32 MiB) and, with it, the free space
    it keeps at the top of its heap (twice that). A process running torch.nn
    frees blocks like these at every step; rnnkit's pool keeps its blocks,
    and the Elman layer's step frees none larger than its output. The
    allocator then kept returning its heap's top to the system, so that
    torch's own temporaries of every training step (the loss's gradients,
    1.6 MiB each at ``T=200 N=32 H=64``) faulted in page by page again
    (measured on an Intel Xeon: the LSTM there 450-830 faults a step
    before its pool blocks did this; the RNN 520 and 0.7 ms of its 4.1
    before :data:`HEAP_ROOM_OUTPUTS` outputs' worth, 8 after). The block, never
    touched, is mapped and unmapped at once, as torch.nn's would be: no
    allocator setting is changed, and nothing is kept."""
    size = min(size, HEAP_ROOM_MAX)
    if size > _heap_room[0]:
        np.empty(size, dtype=np.uint8)
        _heap_room[0] = size


HEAP_ROOM_MAX = 32 << 20
"""glibc's largest mapping threshold (64-bit): a larger block raises nothing."""

HEAP_ROOM_OUTPUTS = 8
"""Outputs' worth of heap room (:func:`make_heap_room`) a layer's forward
pass under autograd makes, for what the step around it allocates and frees
(measured on an Intel Xeon at ``T=200 N=32 H=64``: the RNN with one and a
half outputs' worth 370 faults a step, two and a half 160, four 16; the
layer-normalised RNN with four 550, eight 27)."""


def make_room_for_step(out: Tensor) -> None:
    """:func:`make_heap_room` for a training step around a layer whose forward
    pass, under autograd, gave the output ``out``."""
    make_heap_room(HEAP_ROOM_OUTPUTS * out.numel() * out.element_size())


_POOL = _BufferPool()


def pooled_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A contiguous CPU tensor of ``shape`` from :data:`_POOL`, not
    initialised: for what a forward pass keeps for its backward pass, or a
    gradient that goes on into torch's graph. Never for a layer's outputs:
    storage over a numpy array cannot be resized, which a user may do."""
    return _POOL.empty(shape, dtype)


def machinery_active() -> bool:
    """Whether autocast, forward-mode AD (an open dual level) or a torch.func
    transform is on: the torch machinery that loops reading raw memory would
    escape (see :func:`rnnkit.kernels.fused.refusal`)."""
    return cpu_autocast_enabled() or transforms_active() or forward_ad_active()


def forward_ad_active() -> bool:
    """Whether a forward-mode AD dual level is open: an autograd Function
    without a ``jvp`` (the loops') would refuse its dual tensors."""
    return torch.autograd.forward_ad._current_level >= 0


def _cpu_autocast_test() -> Callable[[], bool]:
    """torch's own test of CPU autocast, bound once: a one-step call makes it every time."""
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled
    return functools.partial(torch.is_autocast_enabled, "cpu")


cpu_autocast_enabled = _cpu_autocast_test()
"""``cpu_autocast_enabled()``: whether autocast is on for the CPU."""

_transforms = getattr(torch._C, "_are_functorch_transforms_active", None)


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vmap, ...) is running: its
    tensors, the state's included, are wrappers, not plain memory."""
    return _transforms is not None and _transforms()


def clean_lengths(lengths: Tensor | None, steps: int) -> Tensor | None:
    """The loops index with the lengths: int64, contiguous, within ``[0, T]``."""
    if lengths is None:
        return None
    return lengths.to(torch.int64).clamp(0, steps).contiguous()


def backward_may_follow(*tensors: Tensor | None) -> bool:
    """Whether autograd will record a call with these inputs, so that the
    loops should keep what a backward pass needs. (Inside an autograd
    Function's forward this cannot be told any more: grad mode is off there,
    and ``needs_input_grad`` ignores ``torch.no_grad()``.)"""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def keep_output(ctx, out: Tensor, single_use: bool) -> None:
    """Keep a Function's output for its backward pass without copying it: a
    detached alias (no reference cycle through the output's ``grad_fn``) and
    its version, so that :func:`kept_output` can tell whether the caller has
    changed it in place since. ``single_use``: the backward loop overwrites
    what the forward pass kept (the LSTM's and GRU's activations), so a
    second backward pass through it needs the forward loop again too."""
    ctx.out, ctx.out_version, ctx.single_use, ctx.spent = out.detach(), out._version, single_use, False


def kept_output(ctx) -> Tensor | None:
    """The output as the forward pass left it, or ``None`` when the backward
    pass must run the forward loop again first: the caller changed the output
    in place (torch.nn's layers, which keep copies, would not need to), or a
    single-use forward pass was spent by an earlier backward pass."""
    out = None if ctx.spent or ctx.out._version != ctx.out_version else ctx.out
    ctx.spent = ctx.single_use
    return out


def lengths_array(lengths: Tensor | None, batch: int, steps: int) -> np.ndarray:
    """``(N,)`` int64 for the loops; every sequence has ``T`` steps when ``None``."""
    return np.full(batch, steps, np.int64) if lengths is None else as_array(lengths)


def stack(tensors: list[Tensor | None]) -> Tensor | None:
    """Both directions' ``W_ih`` (or ``b_ih``) as one tensor, so that one
    product serves both; ``None`` stays ``None``."""
    if tensors[0] is None:
        return None
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


PROJECTION_WORK_PER_THREAD = 8_000_000
"""Multiply-adds of an input projection below which it stays on one thread
when the recurrence does (about 30 µs of them: what handing half of it to a
second thread costs)."""


def project_inputs(
    x: Tensor, weights: list[DirectionWeights], folded: Sequence[Tensor] | None = None, steady: bool = False,
    allocate: Callable[[tuple[int, ...], torch.dtype], Tensor] | None = None,
) -> tuple[Tensor, Callable[[parallel.Piece], None] | None]:
    """``W_ih x_t + b_ih`` of every step and direction: ``(T, N, H_in) ->
    (T, N, D*G*H)``, contiguous, since the loops write into it. Call it with
    autograd off, as inside a Function's forward.

    ``folded``: each direction's bias ``(G*H,)`` to add in place of ``b_ih``
    (``b_ih + b_hh`` where the cell allows it, so that the loops need not add
    ``b_hh`` at every step); ``None`` means ``b_ih``. ``steady``: an
    inference call, as :func:`step_weights` takes it. ``allocate(shape,
    dtype)`` makes the buffer: by default a new tensor (the Elman layer's
    output); :func:`pooled_tensor` for gates kept for the backward pass, or
    :func:`scratch_tensor` for an inference call's gates, which nobody keeps
    (memory whose pages are mapped already, not new memory that may fault
    in page by page: measured, ``T=50 N=64 H=512``, 0-1800 faults per LSTM
    call before, none after).

    The products are rnnkit's own (:func:`~rnnkit.kernels.numba_ops.project_rows`,
    or :func:`~rnnkit.kernels.numba_ops.project_steps` where the per-step
    products go to a BLAS), run in rnnkit's threads, not torch's: a torch product just before the
    loops leaves torch's OpenMP threads spinning, for a while, on the very
    cores the loops' threads need (measured: a two-thread LSTM loop then took
    as long as on one thread). Where :func:`run_pieces` will run several
    pieces at once, the buffer comes back unfilled, with the function that
    fills a piece's rows, for each piece to run first on its own thread;
    else it is filled here, over the steps split among the threads, and the
    function is ``None``. Either way every row's arithmetic is the same.
    """
    steps, batch, features = x.shape
    gated = weights[0].w_ih.shape[0]  # G*H
    shape = (steps, batch, len(weights) * gated)
    out = allocate(shape, x.dtype) if allocate is not None else x.new_empty(shape)
    x_a, out_a = as_array(x), as_array(out)
    w_ih_t = step_weights([w.w_ih.t() for w in weights], x.dtype, steady)
    biases = as_arrays(list(folded) if folded is not None else [w.b_ih for w in weights], (gated,), x.dtype)

    library, gemm = layer_gemm(weights, batch)

    def project(piece: parallel.Piece, t0: int = 0, t1: int = steps) -> None:
        d = piece.d
        if library is None:
            numba_ops.project_rows(x_a, w_ih_t[d], biases[d], out_a, d * gated, piece.n0, piece.n1, t0, t1)
        else:
            numba_ops.project_steps(x_a, w_ih_t[d], biases[d], out_a, d * gated, piece.n0, piece.n1, t0, t1, gemm)

    if _plan(weights, batch, steps, library, gemm)[1] > 1:
        return out, project  # run_pieces keeps a BLAS on the piece's thread
    threads = parallel.threads_for(steps * batch * features * gated * len(weights), PROJECTION_WORK_PER_THREAD)
    jobs = [
        (parallel.Piece(d, 0, batch), t0, t1)
        for d in range(len(weights)) for t0, t1 in parallel.spans(steps, -(-threads // len(weights)))
    ]

    def project_on_one_blas_thread(job: tuple[parallel.Piece, int, int]) -> None:
        with contextlib.nullcontext() if library is None else library.one_thread():
            project(*job)

    parallel.run(project_on_one_blas_thread, jobs, threads)
    return out, None


def layer_gemm(weights: list[DirectionWeights], batch: int) -> tuple[blas.Blas | None, blas.StepGemm]:
    """:func:`blas.per_step_gemm` for a layer's directions ``weights`` on a
    batch of ``batch`` rows: ``W_hh (G*H, P)`` gives the product's shape."""
    gated, width = weights[0].w_hh.shape
    return blas.per_step_gemm(weights[0].w_hh.dtype == torch.float64, batch, len(weights), width, gated)


def _plan(
    weights: list[DirectionWeights], batch: int, steps: int, library: blas.Blas | None, gemm: blas.StepGemm
) -> tuple[list[parallel.Piece], int]:
    """:func:`parallel.plan` for a layer whose per-step products run as
    :func:`layer_gemm` says (``library, gemm``): the recurrence's
    multiply-adds per row and direction are those of its per-step products,
    with ``W_hh`` and, if any, ``W_hr``; where they go to a BLAS, chunks are
    whole blocks of its rows."""
    w = weights[0]
    per_step = w.w_hh.numel() + (0 if w.w_hr is None else w.w_hr.numel())
    row_block = numba_ops.ROW_BLOCK if library is None else gemm[1]
    return parallel.plan(len(weights), batch, steps * per_step, row_block)


def run_pieces(
    work: Callable[[parallel.Piece, blas.StepGemm], None],
    weights: list[DirectionWeights],
    batch: int,
    steps: int,
    first: Callable[[parallel.Piece], None] | None = None,
) -> None:
    """``work(piece, gemm)`` for every direction and batch chunk, on as many
    threads as the work is worth (see :func:`_plan`), each piece preceded by
    ``first(piece)`` where given (:func:`project_inputs`' second value).

    ``gemm`` says how the loops do the per-step products
    (:func:`rnnkit.kernels.blas.per_step_gemm`); where it is a BLAS, each
    piece keeps the BLAS on its own thread."""
    library, gemm = layer_gemm(weights, batch)

    def run_piece(piece: parallel.Piece) -> None:
        with contextlib.nullcontext() if library is None else library.one_thread():
            if first is not None:
                first(piece)
            work(piece, gemm)

    parallel.run(run_piece, *_plan(weights, batch, steps, library, gemm))


def flatten(weights: list[DirectionWeights], fields: int) -> list[Tensor | None]:
    """The first ``fields`` tensors of each direction's weights, one list: the
    form an autograd Function takes them in."""
    return [tensor for w in weights for tensor in w[:fields]]


def unflatten(flat: Sequence[Tensor | None], fields: int) -> list[DirectionWeights]:
    """:func:`flatten` undone."""
    return [DirectionWeights(*flat[k : k + fields]) for k in range(0, len(flat), fields)]


class Wanted(NamedTuple):
    """Which gradients autograd asks a fused layer for."""

    x: bool
    state: tuple[bool, ...]  # one per state tensor (h0, and c0 for the LSTM)
    weights: bool  # any of the weights (none when all are frozen)


class Cell(Protocol):
    """One cell type's part of :class:`FusedLayer`: its loops, around what
    every cell shares.

    ``state_size`` is 1 (``h``) or 2 (``h, c``); ``fields`` the tensors per
    direction in the flat weight list (:class:`DirectionWeights` order);
    ``single_use`` whether the backward loop overwrites what the forward
    pass kept (then a second backward pass runs the forward loop again)."""

    kind: str
    state_size: int
    fields: int
    single_use: bool

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], lengths: np.ndarray,
        keep: bool,
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """``(outputs, kept)``: the Function's outputs, ``output (T, N, D*P)``
        first, then the final state (and what else the cell returns); and,
        when ``keep``, the extra tensors its backward pass needs."""

    def backward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], kept: tuple[Tensor, ...],
        out: Tensor, lengths: np.ndarray, grads: tuple[Tensor, ...], wanted: Wanted,
    ) -> tuple[Tensor | None, tuple[Tensor | None, ...], list[Tensor | None]]:
        """``(grad_x, grad_state, grad_flat)`` from ``grads``, the gradients of
        the outputs, in the forward pass's order; ``out`` is the forward
        output, ``kept`` what the forward pass kept."""


class FusedLayer(torch.autograd.Function):
    """``(cell, keep, lengths, x, *state, *flat_weights) -> cell's outputs``.

    ``keep`` says whether a backward pass may follow (then what it needs is
    kept). Shapes: ``lengths (N,)`` int64 in ``[0, T]`` (``None``: all ``T``),
    ``x (T, N, H_in)``, each state tensor ``(D, N, *)``; ``flat_weights`` is
    each direction's first ``cell.fields`` weights (``None`` where there is
    none). The skeleton every cell shares: keeping the output and what the
    cell asks for, the differentiable backward through the reference, running
    the forward loop again when what was kept is spent, and which input
    gradients are wanted.
    """

    LEADING = 3
    """Arguments before ``x`` (``cell, keep, lengths``), which get no gradient."""

    @staticmethod
    @reuses_call_memory
    def forward(ctx, cell: Cell, keep: bool, lengths: Tensor | None, x: Tensor, *tensors: Tensor | None):
        state, flat = tensors[: cell.state_size], tensors[cell.state_size :]
        lengths_a = lengths_array(lengths, x.shape[1], x.shape[0])
        outputs, kept = cell.forward(x, state, unflatten(flat, cell.fields), lengths_a, keep)
        if keep:
            ctx.save_for_backward(x, *state, *kept, *flat)
            ctx.cell, ctx.kept_count, ctx.lengths, ctx.lengths_a = cell, len(kept), lengths, lengths_a
            keep_output(ctx, outputs[0], cell.single_use)
            make_room_for_step(outputs[0])
        return outputs

    @staticmethod
    @reuses_call_memory
    def backward(ctx, *grads: Tensor):
        cell = ctx.cell
        x, *saved = ctx.saved_tensors
        state, saved = tuple(saved[: cell.state_size]), saved[cell.state_size :]
        kept, flat = tuple(saved[: ctx.kept_count]), saved[ctx.kept_count :]
        skipped = (None,) * FusedLayer.LEADING
        if torch.is_grad_enabled():  # create_graph=True
            return *skipped, *reference_backward(cell.kind, ctx.lengths, x, state, flat, grads)
        weights = unflatten(flat, cell.fields)
        out = kept_output(ctx)
        if out is None:
            outputs, kept = cell.forward(x, state, weights, ctx.lengths_a, True)
            out = outputs[0]
        needs = ctx.needs_input_grad[FusedLayer.LEADING :]
        wanted = Wanted(needs[0], tuple(needs[1 : 1 + cell.state_size]), any(needs[1 + cell.state_size :]))
        grad_x, grad_state, grad_flat = cell.backward(x, state, weights, kept, out, ctx.lengths_a, grads, wanted)
        grad_state = tuple(g if w else None for g, w in zip(grad_state, wanted.state))
        return *skipped, grad_x if wanted.x else None, *grad_state, *grad_flat


def run_cell(
    cell: Cell, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], lengths: Tensor | None
) -> tuple[Tensor, ...]:
    """Run ``cell`` over a layer through :class:`FusedLayer`: its outputs."""
    flat = flatten(weights, cell.fields)
    return FusedLayer.apply(cell, backward_may_follow(x, *state, *flat), lengths, x, *state, *flat)


def weight_grads(
    d_input: Tensor,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    weights: list[DirectionWeights],
    lengths: np.ndarray,
    need_x: bool,
    need_weights: bool,
    last_gate_hidden: Tensor | None = None,
) -> tuple[Tensor | None, list[Tensor | None]]:
    """The gradients that are products over all steps, from the pre-activation
    gradients the backward loops leave.

    Args:
        d_input: ``(T, N, D*G*H)``, the gradients of the input-side
            pre-activations ``W_ih x_t + b_ih``, directions side by side as in
            :func:`project_inputs`. The hidden side ``W_hh h_{t-1} + b_hh`` has
            the same gradients, except with ``last_gate_hidden``.
        x: ``(T, N, H_in)``; ``h0``: ``(D, N, P)``; ``out``: ``(T, N, D*P)``, the
            ``h_t`` of every step.
        lengths: ``(N,)`` int64, as the loops had it.
        need_x: whether to compute ``dL/dx``.
        need_weights: whether to compute the weights' gradients (none are
            wanted when every weight is frozen).
        last_gate_hidden: ``(T, N, D*H)`` or ``None``: the hidden side's
            gradient for the last gate of each direction where it differs
            from the input side's (the GRU's new gate, whose ``b_hn`` sits
            inside the reset product).

    Returns:
        ``(grad_x, grads)``: ``grad_x`` ``(T, N, H_in)`` or ``None``, and
        ``grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh`` for each direction
        (``None`` without ``need_weights``; the bias ones ``None`` without bias).
    """
    steps, batch, features = x.shape
    directions, _, width = h0.shape
    rows = d_input.reshape(steps * batch, d_input.shape[2])
    gated = weights[0].w_ih.shape[0]  # G*H
    grad_x = None
    if need_x:
        grad_x = dense.matmul(rows, stack([w.w_ih for w in weights])).view(steps, batch, features)
    if not need_weights:
        return grad_x, [None] * (4 * directions)
    grad_w_ih = dense.matmul(rows.t(), x.reshape(steps * batch, features))  # (D*G*H, H_in)
    bias = weights[0].b_ih is not None
    sums = rows.sum(0) if bias else None
    last_sums = None
    if bias and last_gate_hidden is not None:
        last_sums = last_gate_hidden.reshape(steps * batch, last_gate_hidden.shape[2]).sum(0)
    grads: list[Tensor | None] = []
    for d in range(directions):
        own = slice(d * gated, (d + 1) * gated)
        prev, first_h = out[:, :, d * width : (d + 1) * width], h0[d]
        if last_gate_hidden is None:
            grad_w_hh = _grad_w_hh(d_input[:, :, own], prev, first_h, lengths, reverse=d == 1)
        else:
            hidden = last_gate_hidden.shape[2] // directions
            shared = slice(d * gated, (d + 1) * gated - hidden)
            last = slice(d * hidden, (d + 1) * hidden)
            grad_w_hh = torch.cat([
                _grad_w_hh(d_input[:, :, shared], prev, first_h, lengths, reverse=d == 1),
                _grad_w_hh(last_gate_hidden[:, :, last], prev, first_h, lengths, reverse=d == 1),
            ])
        grad_b_ih = grad_b_hh = None
        if sums is not None:
            grad_b_ih = sums[own]
            grad_b_hh = sums[own].clone() if last_sums is None else torch.cat([sums[shared], last_sums[last]])
        grads += [grad_w_ih[own], grad_w_hh, grad_b_ih, grad_b_hh]
    return grad_x, grads


def reference_backward(
    mode: str,
    lengths: Tensor | None,
    x: Tensor,
    state: tuple[Tensor, ...],
    flat: list[Tensor | None],
    grad_outputs: tuple[Tensor, ...],
) -> list[Tensor | None]:
    """The gradients with respect to ``x``, every ``state`` tensor and every
    tensor of ``flat`` (``None`` where there is none or none is wanted), by
    the reference recurrence, recorded by autograd: what a fused layer's
    backward returns when ``create_graph=True`` asks for a differentiable one
    (a gradient penalty, say), which the loops are not.

    ``flat`` holds each direction's weights, ``len(flat) // D`` tensors each,
    in :class:`DirectionWeights` order; ``grad_outputs`` are the gradients of
    the output, of each final state and, one more, of the LSTM's cells where
    the call returned them.
    """
    weights = unflatten(flat, len(flat) // state[0].shape[0])
    with_cells = len(grad_outputs) > 1 + len(state)
    with torch.enable_grad():
        if with_cells:
            output, final, cells = reference.run_layer(mode, x, state, weights, lengths, return_cells=True)
            outputs = (output, *final, cells)
        else:
            output, final = reference.run_layer(mode, x, state, weights, lengths)
            outputs = (output, *final)
    inputs = [x, *state, *flat]
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True))
    return [next(found) if t is not None and t.requires_grad else None for t in inputs]


def _grad_w_hh(dz: Tensor, out: Tensor, h0: Tensor, lengths: np.ndarray, reverse: bool) -> Tensor:
    """``sum_t dz_t^T h_prev_t`` for one direction, ``(R, P)``.

    ``h_prev_t`` is the output of the step before, ``out[t - 1]`` forwards or
    ``out[t + 1]`` in reverse, except at a sequence's first step where it is
    ``h_0``. In reverse that first step is ``lengths[n] - 1``, whose
    neighbour ``out[lengths[n]]`` is a zero of the padding, so the shifted
    product counts it as zero and ``h_0``'s term is added on its own.
    Shapes: ``dz (T, N, R)``, ``out (T, N, P)`` views, ``h0 (N, P)``.
    """
    rows, width = dz.shape[2], h0.shape[1]
    if reverse:
        shifted_dz, previous = dz[:-1], out[1:]
        first = dz[torch.from_numpy(lengths - 1).clamp(min=0), torch.arange(dz.shape[1])]  # (N, R)
    else:
        shifted_dz, previous = dz[1:], out[:-1]
        first = dz[0]
    pairs = shifted_dz.shape[0] * shifted_dz.shape[1]
    grad = dense.matmul(shifted_dz.reshape(pairs, rows).t(), previous.reshape(pairs, width))
    return grad.addmm_(first.t(), h0)
