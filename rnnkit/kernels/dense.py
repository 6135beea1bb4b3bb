"""The products over all steps at once that the backward pass does through
torch: the input's and the weights' gradients (the input projection is
rnnkit's own, :func:`rnnkit.kernels.numba_ops.project_rows`).

These are large GEMMs (``T*N`` rows), done once per layer call after the
compiled loops. On x86 CPUs other than Intel's, torch's own
GEMM (MKL) runs its AVX2 code, and oneDNN, which torch also carries (the
library behind ``torch.nn.LSTM`` on the CPU), runs AVX-512 where the CPU has
it: measured on an AMD EPYC (Zen 5), one thread, float32, it does
``(1600, 128) @ (128, 512)`` in 0.83 ms against ``torch.mm``'s 1.87
(250 against 112 GFLOP/s), and the same at every size from about two
million multiply-adds. Below that its fixed cost (about 10 µs a call) is
more than it saves, and so is the copy of a transposed input for a small
output (:data:`MIN_ONEDNN_REDUCTION_OUTPUT`). It has no float64, and on
Intel CPUs MKL has AVX-512 code of its own: measured on an Intel Xeon
(AVX-512, AMX), float32, ``torch.mm`` ran these products 1.05-1.15 times as
fast as oneDNN on one and two threads, so everything else stays with
torch's matmul there.

oneDNN's results do not depend on the thread count (tested), as the loops'
do not. MKL's do for a product over a long inner dimension with a small
output (a weight's gradient), which it splits over its threads; those go
through :func:`_reduction_in_pieces`, so that a layer's outputs and
gradients stay bitwise the same whatever the threads.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from rnnkit.kernels import blas, numba_ops, parallel
from rnnkit.kernels.blas import INTEL

MIN_ONEDNN_WORK = 1 << 21
"""Multiply-adds of a product from which oneDNN is worth its fixed cost."""


def _onednn_available() -> bool:
    """Whether torch was built with oneDNN's CPU linear layer."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available() and not INTEL
"""Whether large float32 products go to oneDNN (see the module docstring)."""


MIN_ONEDNN_REDUCTION_OUTPUT = 1 << 14
"""Outputs of a product over a long inner dimension taken from a transpose
(``dz^T x``, a weight's gradient) from which oneDNN is worth it: torch's
oneDNN entry copies a transposed input first, which a small output does not
repay (measured, 2 threads: ``(64, 6400) @ (6400, 64)`` 0.31 ms against
MKL's 0.29, ``(512, 1600) @ (1600, 128)`` 0.78 against 1.12)."""


def _use_onednn(a: Tensor, b: Tensor) -> bool:
    rows, inner = a.shape
    if not (ONEDNN and a.dtype == torch.float32 and b.dtype == torch.float32 and a.device.type == "cpu"):
        return False
    if rows * inner * b.shape[1] < MIN_ONEDNN_WORK:
        return False
    return a.is_contiguous() or rows * b.shape[1] >= MIN_ONEDNN_REDUCTION_OUTPUT


def matmul(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b (+ bias)``, a new contiguous tensor: ``(M, K) @ (K, N) -> (M, N)``,
    ``bias (N,)``. Views (transposes, column slices) are fine for ``a`` and
    ``b``. Call it with autograd off, as inside a Function's forward or backward."""
    if not _use_onednn(a, b):
        if not a.is_contiguous() and a.device.type == "cpu":
            out = _reduction_in_pieces(a, b)
            return out if bias is None else out.add_(bias)
        return a @ b if bias is None else torch.addmm(bias, a, b)
    if a.is_contiguous():
        return _onednn(a, b, bias)
    # A product over the long inner dimension of a transpose (a weight's
    # gradient, ``dz^T x``). torch's oneDNN entry takes its first operand
    # contiguous only, and copies a transposed one, at about 10 GB/s. So
    # where ``b`` is the narrower and ``a^T``'s rows are contiguous (one
    # direction's columns of the gradients, say), the product is done as
    # ``(b^T a^T)^T``: ``b`` is copied, and oneDNN reads ``a^T`` as it lies,
    # or as a plain copy of its rows (measured, 2 threads: ``(256, 6400) @
    # (6400, 64)`` 0.75 ms against 1.41). Either way it goes in chunks of
    # the inner dimension, so that the copy of each stays small (whole, it
    # raised a training step's peak memory by the size of the gradients it reads).
    swap = b.shape[1] < a.shape[0] and a.stride(0) == 1
    if swap:  # b's rows, and a^T's where they must be made contiguous
        copied = b.shape[1] + (0 if a.t().is_contiguous() else a.shape[0])
    else:  # a's chunk, and b's where it is not plain
        copied = max(a.shape[0], b.shape[1])
    step = max(1, REDUCTION_CHUNK_BYTES // (a.element_size() * copied))
    out = None
    for k0 in range(0, a.shape[1], step):
        left, right = a[:, k0 : k0 + step], b[k0 : k0 + step]
        part = _onednn(right.t().contiguous(), left.t(), None) if swap else _onednn(left, right, None)
        out = part if out is None else out.add_(part)
    if swap:
        out = out.t().contiguous()
    return out if bias is None else out.add_(bias)


REDUCTION_PIECES = 1 << max(1, ((os.cpu_count() or 2) - 1).bit_length())
"""Pieces that a product over a long inner dimension (a weight's gradient,
``dz^T x``) left to torch's BLAS is cut into, at most: the machine's cores,
rounded up to a power of two (the fewest that keep every core busy; each
piece costs a BLAS call and a hand-over), whatever the thread setting.
They are blocks of 64 output rows or more, and, where there are fewer blocks
than this, spans of the inner dimension of at least :data:`MIN_REDUCTION_SPAN`."""

MIN_REDUCTION_SPAN = 512

REDUCTION_WORK_PER_THREAD = 1 << 22
"""Multiply-adds a thread must have of such a product to be worth waking
(handing pieces to torch's OpenMP team costs about 35 µs)."""


def _reduction_in_pieces(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a transposed ``a (M, K)``, ``b (K, N)``, bitwise the
    same whatever the thread count.

    Threaded, MKL splits a long inner dimension over its threads, and the
    sums then depend on their number (seen on an Intel Xeon, float32 and
    float64, for ``(64, 800) @ (800, 8)`` up to ``(512, 1600) @ (1600,
    128)``, not for ``(2048, 3200) @ (3200, 512)``). So the product is cut,
    by its shape alone, into blocks of output rows and spans of ``K``
    (:data:`REDUCTION_PIECES`; one piece below two threads' worth of
    :data:`REDUCTION_WORK_PER_THREAD`), each one BLAS call on one thread made from
    compiled code (:func:`~rnnkit.kernels.numba_ops.transposed_product`, so
    that the threads do not queue for Python's lock), shared by rnnkit's
    threads; the spans' sums are then added in order. Measured there, a
    training step took 1.02-1.08x its time with threaded MKL (1.03-1.11x
    with the pieces called through ``torch.mm``, 1.08-1.35x with oneDNN,
    which does not depend on the thread count either). Where torch's wheel
    has no MKL, and for other dtypes or an empty product, it is left to
    torch as it is."""
    mkl = blas.torch_mkl()
    if mkl is None or a.dtype not in (torch.float32, torch.float64) or b.dtype != a.dtype or 0 in (*a.shape, *b.shape):
        return a @ b
    (rows, inner), columns = a.shape, b.shape[1]
    a_t = (a.t() if a.stride(0) == 1 else a.t().contiguous()).detach().numpy()  # (K, M), unit steps along rows
    b_rows = (b if b.stride(1) == 1 else b.contiguous()).detach().numpy()
    gemm = mkl.gemm(a.dtype == torch.float64)
    if rows * inner * columns < 2 * REDUCTION_WORK_PER_THREAD:  # one thread's worth: one piece
        out = torch.empty(rows, columns, dtype=a.dtype)
        with mkl.one_thread():
            numba_ops.transposed_product(a_t, b_rows, out.numpy(), 0, rows, 0, inner, gemm)
        return out
    block = max(64, -(-rows // (REDUCTION_PIECES * 64)) * 64)
    blocks = -(-rows // block)
    spans = max(1, min(REDUCTION_PIECES // blocks, inner // MIN_REDUCTION_SPAN))
    spans = 1 << (spans.bit_length() - 1)  # a power of two: pieces split evenly over 2^k threads
    span = -(-inner // spans)
    parts = torch.empty(spans, rows, columns, dtype=a.dtype)
    parts_a = parts.numpy()

    def product(piece: tuple[int, int]) -> None:
        r0, k = piece
        with mkl.one_thread():
            numba_ops.transposed_product(
                a_t, b_rows, parts_a[k], r0, min(r0 + block, rows), k * span, min((k + 1) * span, inner), gemm
            )

    threads = parallel.threads_for(rows * inner * columns, REDUCTION_WORK_PER_THREAD)
    parallel.run(product, [(r0, k) for k in range(spans) for r0 in range(0, rows, block)], threads)
    out = parts[0]
    for k in range(1, spans):
        out.add_(parts[k])
    return out


REDUCTION_CHUNK_BYTES = 1 << 22
"""The most of an operand of a long reduction copied at once."""


def _onednn(a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(_plain(a), _plain(b).t(), bias, "none", [], "")


def _plain(t: Tensor) -> Tensor:
    """``t`` if it is contiguous or the transpose of a contiguous matrix, else
    a contiguous copy: oneDNN takes other strides (a slice's rows, say) on a
    slow reference path (measured 100 times slower)."""
    return t if t.is_contiguous() or t.t().is_contiguous() else t.contiguous()
