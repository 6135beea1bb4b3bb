"""The fused Elman RNN layer (``rnn_tanh``, ``rnn_relu``): its cell for :class:`~rnnkit.kernels.fused_common.FusedLayer`.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``:

1. every step's input projection for both directions, ``W_ih x_t + b_ih +
   b_hh``, goes straight into the output buffer ``(T, N, D*H)``
   (:func:`~rnnkit.kernels.fused_common.project_inputs`);
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
from rnnkit.kernels.blas import StepGemm
from rnnkit.kernels.elman_loops import elman_backward, elman_forward, elman_step
from rnnkit.kernels.fused_common import Wanted
from rnnkit.kernels.reference import DirectionWeights, State


class Elman:
    """The Elman cell (:class:`~rnnkit.kernels.fused_common.Cell`): outputs
    ``output (T, N, D*H)`` and ``h_n (D, N, H)``; the backward pass needs
    nothing beyond the inputs and the output."""

    state_size, fields, single_use = 1, 4, False  # w_ih, w_hh, b_ih, b_hh

    def __init__(self, kind: str):
        self.kind, self.relu = kind, kind == "rnn_relu"

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], lengths: np.ndarray,
        keep: bool,
    ) -> tuple[tuple[Tensor, Tensor], tuple[()]]:
        (h0,) = state
        steps, batch, _ = x.shape
        hidden = h0.shape[2]
        biases = None if weights[0].b_ih is None else [w.b_ih + w.b_hh for w in weights]
        out, project = common.project_inputs(x, weights, biases, steady=not keep)  # (T, N, D*H): W_ih x_t + biases, then, in place, h_t
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        w_hh_t = common.step_weights([w.w_hh.t() for w in weights], x.dtype, steady=not keep)
        out_a, h_a = common.as_array(out), common.as_array(h_n)

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            elman_forward(out_a, d * hidden, w_hh_t[d], h_a[d], lengths, d == 1, self.relu, piece.n0, piece.n1, gemm)

        common.run_pieces(work, weights, batch, steps, project)
        return (out, h_n), ()

    def backward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], kept: tuple[Tensor, ...],
        out: Tensor, lengths: np.ndarray, grads: tuple[Tensor, ...], wanted: Wanted,
    ) -> tuple[Tensor | None, tuple[Tensor], list[Tensor | None]]:
        (h0,), (grad_out, grad_h_n) = state, grads
        steps, batch, _ = x.shape
        hidden = h0.shape[2]
        dz = common.scratch_tensor(out.shape, out.dtype)  # (T, N, D*H): dL/dz_t of every step and direction
        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        w_hh = common.step_weights([w.w_hh for w in weights], x.dtype)
        out_a, dz_a, dh_a = common.as_array(out), common.as_array(dz), common.as_array(grad_h0)
        grad_out_a = common.as_array(grad_out)

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            elman_backward(
                out_a, grad_out_a, dz_a, d * hidden, w_hh[d], dh_a[d], lengths,
                d == 1, self.relu, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        grad_x, grads = common.weight_grads(dz, x, h0, out, weights, lengths, wanted.x, wanted.weights)
        return grad_x, (grad_h0,), grads


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """One Elman layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    output, h_n = common.run_cell(Elman(kind), x, state, weights, lengths)
    return output, (h_n,)


def step(kind: str, x: int, state: tuple[int, ...], w, out: int, width: int, col: int, new: tuple[int, ...],
         rows: int, keep: int = 0) -> None:
    """One step on its own by address (:data:`rnnkit.kernels.fused_step.STEPS`);
    nothing is kept (``keep``): autograd records the Elman step through the reference."""
    elman_step((x, state[0], *w.at[:4], out, new[0]), rows, w.inputs, w.hidden, width, col, kind == "rnn_relu", w.zero)
