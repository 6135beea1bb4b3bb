"""The fused Elman RNN layer (``rnn_tanh``, ``rnn_relu``): a ``torch.autograd.Function``.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``:

1. one matrix product gives every step's input projection for both
   directions, ``W_ih x_t + b_ih``, straight into the output buffer
   ``(T, N, D*H)`` (:func:`~rnnkit.kernels.fused_common.project_inputs`);
2. :func:`~rnnkit.kernels.elman_loops.elman_forward` runs the recurrence in
   place, each direction and batch chunk on a thread of its own.

Backward, from ``dL/d output`` and ``dL/d h_n``:

1. :func:`~rnnkit.kernels.elman_loops.elman_backward` walks the steps back
   and leaves ``dz_t``, the gradient of each step's pre-activation, in a
   ``(T, N, D*H)`` buffer, and ``dL/dh_0``;
2. matrix products over all steps at once give the rest
   (:func:`~rnnkit.kernels.fused_common.weight_grads`):
   ``dL/dx = dz W_ih``, ``dL/dW_ih = dz^T x``, ``dL/dW_hh = sum_t dz_t^T h_{t-1}``,
   and ``dL/db_ih = dL/db_hh = sum_t dz_t``.

Only ``x``, ``h_0``, the weights and the output are kept for the backward
pass, against torch.nn's several tensors per step, and nothing when no
backward pass can follow. If the caller changes the output in place before
the backward pass, that pass runs the forward loop again; one that must
itself be differentiable (``create_graph=True``) goes through the reference
recurrence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import parallel
from rnnkit.kernels.elman_loops import elman_backward, elman_forward
from rnnkit.kernels.reference import DirectionWeights, State


FIELDS = 4
"""Tensors per direction in the flat argument list: ``w_ih, w_hh, b_ih, b_hh``."""


def _forward(
    x: Tensor, h0: Tensor, weights: list[DirectionWeights], lengths: np.ndarray, relu: bool
) -> tuple[Tensor, Tensor]:
    """The forward pass: ``(out, h_n)``."""
    steps, batch, _ = x.shape
    hidden = h0.shape[2]
    out = common.project_inputs(x, weights)  # (T, N, D*H): W_ih x_t + b_ih, then, in place, h_t
    h_n = h0.detach().clone(memory_format=torch.contiguous_format)
    w_hh = [common.as_array(w.w_hh) for w in weights]
    b_hh = common.as_arrays([w.b_hh for w in weights], (hidden,), x.dtype)
    out_a, h_a = common.as_array(out), common.as_array(h_n)

    def work(piece: parallel.Piece, gemm: int) -> None:
        d = piece.d
        elman_forward(
            out_a, d * hidden, w_hh[d], b_hh[d], h_a[d], lengths, d == 1, relu, piece.n0, piece.n1, gemm
        )

    common.run_pieces(work, weights, batch, steps)
    return out, h_n


class ElmanFunction(torch.autograd.Function):
    """``(relu, keep, lengths, x, h0, *flat_weights) -> (output, h_n)``.

    ``keep`` says whether a backward pass may follow (then what it needs is
    kept). Shapes: ``lengths (N,)`` int64 in ``[0, T]`` (``None``: all ``T``),
    ``x (T, N, H_in)``, ``h0 (D, N, H)``; ``flat_weights`` is ``w_ih, w_hh,
    b_ih, b_hh`` per direction (biases ``None`` without bias). Returns
    ``output (T, N, D*H)`` and ``h_n (D, N, H)``.
    """

    @staticmethod
    def forward(
        ctx, relu: bool, keep: bool, lengths: Tensor | None, x: Tensor, h0: Tensor, *flat: Tensor | None
    ):
        lengths_a = common.lengths_array(lengths, x.shape[1], x.shape[0])
        out, h_n = _forward(x, h0, common.unflatten(flat, FIELDS), lengths_a, relu)
        if keep:
            ctx.save_for_backward(x, h0, *flat)
            ctx.relu, ctx.lengths, ctx.lengths_a = relu, lengths, lengths_a
            common.keep_output(ctx, out, single_use=False)
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_h_n: Tensor):
        x, h0, *flat = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            mode = "rnn_relu" if ctx.relu else "rnn_tanh"
            grads = common.reference_backward(mode, ctx.lengths, x, (h0,), flat, (grad_out, grad_h_n))
            return None, None, None, *grads
        lengths_a = ctx.lengths_a
        weights = common.unflatten(flat, FIELDS)
        out = common.kept_output(ctx)
        if out is None:
            out, _ = _forward(x, h0, weights, lengths_a, ctx.relu)
        steps, batch, _ = x.shape
        directions, _, hidden = h0.shape

        dz = torch.empty_like(out)  # (T, N, D*H): dL/dz_t of every step and direction
        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        w_hh_t = [common.as_array(w.w_hh.t()) for w in weights]
        out_a, dz_a, dh_a = common.as_array(out), common.as_array(dz), common.as_array(grad_h0)
        grad_out_a = common.as_array(grad_out)

        def work(piece: parallel.Piece, gemm: int) -> None:
            d = piece.d
            elman_backward(
                out_a, grad_out_a, dz_a, d * hidden, w_hh_t[d], dh_a[d], lengths_a,
                d == 1, ctx.relu, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        needs = ctx.needs_input_grad
        grad_x, grads = common.weight_grads(dz, x, h0, out, weights, lengths_a, needs[3], any(needs[5:]))
        return None, None, None, grad_x, grad_h0 if needs[4] else None, *grads


def run_layer(
    mode: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """One Elman layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    flat = common.flatten(weights, FIELDS)
    output, h_n = ElmanFunction.apply(
        mode == "rnn_relu", common.backward_may_follow(x, *state, *flat),
        lengths, x, state[0], *flat,
    )
    return output, (h_n,)
