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
output (:data:`MIN_ONEDNN_REDUCTION_OUTPUT`). It has no float64, and on Intel CPUs MKL has AVX-512 code of
its own, so everything else stays with torch's matmul.

oneDNN's results do not depend on the thread count (tested), as the loops'
do not, so a layer's output stays bitwise the same whatever the threads.
"""

from __future__ import annotations

import torch
from torch import Tensor

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


REDUCTION_CHUNK_BYTES = 1 << 22
"""The most of an operand of a long reduction copied at once."""


def _onednn(a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(_plain(a), _plain(b).t(), bias, "none", [], "")


def _plain(t: Tensor) -> Tensor:
    """``t`` if it is contiguous or the transpose of a contiguous matrix, else
    a contiguous copy: oneDNN takes other strides (a slice's rows, say) on a
    slow reference path (measured 100 times slower)."""
    return t if t.is_contiguous() or t.t().is_contiguous() else t.contiguous()
