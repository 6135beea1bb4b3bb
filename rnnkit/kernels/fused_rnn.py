"""The fused Elman RNN layer (``rnn_tanh``, ``rnn_relu``): a ``torch.autograd.Function``.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``:

1. one matrix product gives every step's input projection for both
   directions, ``W_ih x_t + b_ih``, straight into the output buffer
   ``(T, N, D*H)``;
2. :func:`~rnnkit.kernels.elman_loops.elman_forward` runs the recurrence in
   place, each direction and batch chunk on a thread of its own.

Backward, from ``dL/d output`` and ``dL/d h_n``:

1. :func:`~rnnkit.kernels.elman_loops.elman_backward` walks the steps back
   and leaves ``dz_t``, the gradient of each step's pre-activation, in a
   ``(T, N, D*H)`` buffer, and ``dL/dh_0``;
2. matrix products over all steps at once give the rest:
   ``dL/dx = dz W_ih``, ``dL/dW_ih = dz^T x``, ``dL/dW_hh = sum_t dz_t^T h_{t-1}``,
   and ``dL/db_ih = dL/db_hh = sum_t dz_t``.

Only ``x``, ``h_0``, the weights and the output are kept for the backward
pass, against torch.nn's several tensors per step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.kernels import parallel
from rnnkit.kernels.elman_loops import elman_backward, elman_forward
from rnnkit.kernels.reference import DirectionWeights, State


def _array(t: Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor, sharing its memory. A copy only if ``t``
    is not contiguous, which the buffers the loops write into always are."""
    return t.detach().contiguous().numpy()


def _stack(tensors: list[Tensor | None]) -> Tensor | None:
    """Both directions' ``W_ih`` (or ``b_ih``) as one tensor, so that one
    product serves both; ``None`` stays ``None``."""
    if tensors[0] is None:
        return None
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class ElmanFunction(torch.autograd.Function):
    """``(relu, lengths, x, h0, *flat_weights) -> (output, h_n)``.

    Shapes: ``lengths (N,)`` int64 in ``[0, T]`` (``None``: all ``T``), ``x (T, N, H_in)``,
    ``h0 (D, N, H)``; ``flat_weights`` is ``w_ih, w_hh, b_ih, b_hh`` per
    direction (biases ``None`` without bias). Returns ``output (T, N, D*H)``
    and ``h_n (D, N, H)``. Differentiable once.
    """

    @staticmethod
    def forward(ctx, relu: bool, lengths: Tensor | None, x: Tensor, h0: Tensor, *flat: Tensor | None):
        weights = [DirectionWeights(*flat[k : k + 4]) for k in range(0, len(flat), 4)]
        steps, batch, _ = x.shape
        hidden = h0.shape[2]
        # (T, N, D*H): first W_ih x_t + b_ih, then, in place, h_t
        w_ih, b_ih = _stack([w.w_ih for w in weights]), _stack([w.b_ih for w in weights])
        out = F.linear(x, w_ih, b_ih).contiguous()  # contiguous: the loops write into it
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        lengths_a = np.full(batch, steps, np.int64) if lengths is None else _array(lengths)
        w_hh = [_array(w.w_hh) for w in weights]
        b_hh = [np.zeros(hidden, w_hh[0].dtype) if w.b_hh is None else _array(w.b_hh) for w in weights]
        out_a, h_a = _array(out), _array(h_n)

        def work(piece: parallel.Piece) -> None:
            d = piece.d
            elman_forward(
                out_a, d * hidden, w_hh[d], b_hh[d], h_a[d], lengths_a, d == 1, relu,
                piece.n0, piece.n1,
            )

        parallel.run(work, *parallel.plan(len(weights), batch, steps * hidden * hidden))
        ctx.save_for_backward(x, h0, out, *flat)
        ctx.relu, ctx.lengths = relu, lengths_a
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, grad_h_n: Tensor):
        x, h0, out, *flat = ctx.saved_tensors
        lengths_a = ctx.lengths
        weights = [DirectionWeights(*flat[k : k + 4]) for k in range(0, len(flat), 4)]
        steps, batch, features = x.shape
        directions, _, hidden = h0.shape

        dz = torch.empty_like(out)  # (T, N, D*H): dL/dz_t of every step and direction
        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        w_hh_t = [_array(w.w_hh.t()) for w in weights]
        out_a, dz_a, dh_a = _array(out), _array(dz), _array(grad_h0)
        grad_out_a = _array(grad_out)

        def work(piece: parallel.Piece) -> None:
            d = piece.d
            elman_backward(
                out_a, grad_out_a, dz_a, d * hidden, w_hh_t[d], dh_a[d], lengths_a,
                d == 1, ctx.relu, piece.n0, piece.n1,
            )

        parallel.run(work, *parallel.plan(directions, batch, steps * hidden * hidden))

        needs = ctx.needs_input_grad
        w_ih = _stack([w.w_ih for w in weights])
        dz_rows = dz.view(steps * batch, directions * hidden)
        grad_x = (dz_rows @ w_ih).view(steps, batch, features) if needs[2] else None
        grad_w_ih = dz_rows.t() @ x.reshape(steps * batch, features)  # (D*H, H_in)
        grad_b = dz_rows.sum(0) if weights[0].b_ih is not None else None
        grads: list[Tensor | None] = []
        for d in range(directions):
            cols = slice(d * hidden, (d + 1) * hidden)
            grads += [
                grad_w_ih[cols],
                _grad_w_hh(dz[:, :, cols], out[:, :, cols], h0[d], lengths_a, reverse=d == 1),
                None if grad_b is None else grad_b[cols],
                None if grad_b is None else grad_b[cols].clone(),  # b_hh: a tensor of its own
            ]
        return None, None, grad_x, grad_h0 if needs[3] else None, *grads


def _grad_w_hh(dz: Tensor, out: Tensor, h0: Tensor, lengths: np.ndarray, reverse: bool) -> Tensor:
    """``sum_t dz_t^T h_prev_t`` for one direction, ``(H, H)``.

    ``h_prev_t`` is the output of the step before, ``out[t - 1]`` forwards or
    ``out[t + 1]`` in reverse, except at a sequence's first step where it is
    ``h_0``. In reverse that first step is ``lengths[n] - 1``, whose
    neighbour ``out[lengths[n]]`` is a zero of the padding, so the shifted
    product counts it as zero and ``h_0``'s term is added on its own.
    Shapes: ``dz``, ``out`` ``(T, N, H)`` views, ``h0 (N, H)``.
    """
    hidden = h0.shape[1]
    if reverse:
        shifted_dz, previous = dz[:-1], out[1:]
        first = dz[torch.from_numpy(lengths - 1).clamp(min=0), torch.arange(dz.shape[1])]  # (N, H)
    else:
        shifted_dz, previous = dz[1:], out[:-1]
        first = dz[0]
    grad = shifted_dz.reshape(-1, hidden).t() @ previous.reshape(-1, hidden)
    return grad.addmm_(first.t(), h0)


def run_layer(
    mode: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """One Elman layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    if lengths is not None:  # the loops index with it: int64, contiguous, within [0, T]
        lengths = lengths.to(torch.int64).clamp(0, x.shape[0]).contiguous()
    flat = [tensor for w in weights for tensor in (w.w_ih, w.w_hh, w.b_ih, w.b_hh)]
    output, h_n = ElmanFunction.apply(mode == "rnn_relu", lengths, x, state[0], *flat)
    return output, (h_n,)
